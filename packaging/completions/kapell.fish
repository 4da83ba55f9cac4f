# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_kapell_global_optspecs
    string join \n config-dir= h/help V/version
end

function __fish_kapell_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_kapell_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_kapell_using_subcommand
    set -l cmd (__fish_kapell_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c kapell -n "__fish_kapell_needs_command" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_needs_command" -s h -l help -d 'Print help'
complete -c kapell -n "__fish_kapell_needs_command" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "check" -d 'Validate stacks and print every problem as file:line:col'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "generate" -d 'Render stacks into unit files in DIR, as the generator would'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "graph" -d 'Draw the service graph: one box per stack, an arrow per dependency'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "apply" -d 'Make systemd run what the stack files say, and print what was done'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "status" -d 'Show every service: its unit, state, health, since when, and restart count'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "logs" -d 'Show a service\'s journal (every instance of a replicated service)'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "fleet" -d 'Push the stacks to the fleet of fleet.toml: plan, apply, status, promote, rollout retry'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "federate" -d 'Keep every host of the fleet converged (run by kapell-federation.service)'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "dns" -d 'Answer `<service>.<stack>.kapell` with the hosts where the service runs and is healthy'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "receive" -d 'Answer one request of a fleet controller: read it from stdin, reply with JSON on stdout'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "import" -d 'Turn another tool\'s project into a stack file'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "probe" -d 'Probe a native service\'s health check from this host, as its unit file describes it'
complete -c kapell -n "__fish_kapell_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand check" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand check" -l json -d 'Print the result as JSON on stdout'
complete -c kapell -n "__fish_kapell_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand check" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand generate" -l out -d 'Directory to write the units into (created if missing)' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand generate" -l kapell-path -d 'Path of the kapell binary on the hosts that run the units (in container services\' ExecStart=)' -r
complete -c kapell -n "__fish_kapell_using_subcommand generate" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand generate" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand graph" -l format -d 'Output format' -r -f -a "dot\t''
svg\t''"
complete -c kapell -n "__fish_kapell_using_subcommand graph" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand graph" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand graph" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand apply" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand apply" -l dry-run -d 'Print the plan and change nothing'
complete -c kapell -n "__fish_kapell_using_subcommand apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand apply" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand status" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand status" -l json -d 'Print a JSON array, one object per unit, instead of the table'
complete -c kapell -n "__fish_kapell_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand status" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand logs" -s n -l lines -d 'Show only the last N entries (journalctl -n)' -r
complete -c kapell -n "__fish_kapell_using_subcommand logs" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand logs" -s f -l follow -d 'Keep printing new entries as they arrive (journalctl -f)'
complete -c kapell -n "__fish_kapell_using_subcommand logs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand logs" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "plan" -d 'Show, per host, the units a push would add, change and remove, with a diff; change nothing'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "apply" -d 'Push every host\'s unit set and make its systemd run it, all hosts in parallel'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "status" -d 'Show every host\'s services: HOST, STACK, SERVICE, GOAL, STATE, SINCE'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "promote" -d 'Promote the canaries of the rollout waiting for it, and roll the other hosts out'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "rollout" -d 'Rollouts of a desired state'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and not __fish_seen_subcommand_from plan apply status promote rollout help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from plan" -l on -d 'Only these hosts (names, or @key=value for every host with that label)' -r
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from plan" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from plan" -l json -d 'Print JSON instead of text'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from plan" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from plan" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -l on -d 'Only these hosts (names, or @key=value for every host with that label)' -r
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -l no-rollout -d 'Push every host at once, without rolling batches (a desired state whose rollout failed stays held: --force pushes it)'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -l force -d 'Replace sets this controller did not push, and push sets that were rolled back (a failed desired state too)'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from apply" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from status" -l on -d 'Only these hosts (names, or @key=value for every host with that label)' -r
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from status" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from status" -l json -d 'Print JSON instead of the table'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from status" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from promote" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from promote" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from promote" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from rollout" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from rollout" -s h -l help -d 'Print help'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from rollout" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from rollout" -f -a "retry" -d 'Roll the failed desired state out again, from its canaries or its first batch'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from rollout" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "plan" -d 'Show, per host, the units a push would add, change and remove, with a diff; change nothing'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "apply" -d 'Push every host\'s unit set and make its systemd run it, all hosts in parallel'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "status" -d 'Show every host\'s services: HOST, STACK, SERVICE, GOAL, STATE, SINCE'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "promote" -d 'Promote the canaries of the rollout waiting for it, and roll the other hosts out'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "rollout" -d 'Rollouts of a desired state'
complete -c kapell -n "__fish_kapell_using_subcommand fleet; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand federate" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand federate" -l force -d 'Replace sets on hosts that this controller did not push'
complete -c kapell -n "__fish_kapell_using_subcommand federate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand federate" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l listen -d 'The address this host\'s processes ask' -r
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l port -d 'The DNS port on every address. systemd-resolved is told another port than 53; containers are not (Docker names a container\'s DNS servers without a port): they keep Docker\'s own forwarding' -r
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l ip -d 'This host\'s address in answers when the catalog comes from the local stacks (default: the source address of its default route)' -r
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l no-resolved -d 'Do not route `.kapell` through systemd-resolved (no `kapell-dns` link)'
complete -c kapell -n "__fish_kapell_using_subcommand dns" -l no-containers -d 'Do not listen on kapell\'s Docker networks'
complete -c kapell -n "__fish_kapell_using_subcommand dns" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand dns" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand receive" -l revert-unconfirmed -d 'Revert GENERATION if the controller has not confirmed it (run by the timer an install with a confirm window starts; not for people)' -r
complete -c kapell -n "__fish_kapell_using_subcommand receive" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand receive" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand receive" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand import; and not __fish_seen_subcommand_from compose help" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand import; and not __fish_seen_subcommand_from compose help" -s h -l help -d 'Print help'
complete -c kapell -n "__fish_kapell_using_subcommand import; and not __fish_seen_subcommand_from compose help" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand import; and not __fish_seen_subcommand_from compose help" -f -a "compose" -d 'Turn a Docker Compose project into a stack file, reporting everything it cannot carry over'
complete -c kapell -n "__fish_kapell_using_subcommand import; and not __fish_seen_subcommand_from compose help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l stack -d 'Name of the stack (default: the Compose project name, made a valid stack name)' -r
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l out -d 'Write the stack here instead of to standard output: a file whose name is <stack>.toml, or a directory (such as /etc/kapell) to write <stack>.toml into' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l env-file -d 'The file of variables for interpolation (default: .env beside the Compose file, if any)' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l force -d 'Replace the file --out names if it exists'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -l strict -d 'Treat everything that cannot be carried over as an error: report each, write nothing, exit 4'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from compose" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "compose" -d 'Turn a Docker Compose project into a stack file, reporting everything it cannot carry over'
complete -c kapell -n "__fish_kapell_using_subcommand import; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand probe" -l instance -d 'The replica number of a replicated service (the template unit\'s %i)' -r
complete -c kapell -n "__fish_kapell_using_subcommand probe" -l config-dir -d 'Directory holding the stacks (*.toml) and, on a controller, fleet.toml' -r -F
complete -c kapell -n "__fish_kapell_using_subcommand probe" -l until-healthy -d 'Probe at the check\'s interval until a probe passes (a native service\'s ExecStartPost=)'
complete -c kapell -n "__fish_kapell_using_subcommand probe" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c kapell -n "__fish_kapell_using_subcommand probe" -s V -l version -d 'Print version'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "check" -d 'Validate stacks and print every problem as file:line:col'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "generate" -d 'Render stacks into unit files in DIR, as the generator would'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "graph" -d 'Draw the service graph: one box per stack, an arrow per dependency'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "apply" -d 'Make systemd run what the stack files say, and print what was done'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "status" -d 'Show every service: its unit, state, health, since when, and restart count'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "logs" -d 'Show a service\'s journal (every instance of a replicated service)'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "fleet" -d 'Push the stacks to the fleet of fleet.toml: plan, apply, status, promote, rollout retry'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "federate" -d 'Keep every host of the fleet converged (run by kapell-federation.service)'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "dns" -d 'Answer `<service>.<stack>.kapell` with the hosts where the service runs and is healthy'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "receive" -d 'Answer one request of a fleet controller: read it from stdin, reply with JSON on stdout'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "import" -d 'Turn another tool\'s project into a stack file'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "probe" -d 'Probe a native service\'s health check from this host, as its unit file describes it'
complete -c kapell -n "__fish_kapell_using_subcommand help; and not __fish_seen_subcommand_from check generate graph apply status logs fleet federate dns receive import probe help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "plan" -d 'Show, per host, the units a push would add, change and remove, with a diff; change nothing'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "apply" -d 'Push every host\'s unit set and make its systemd run it, all hosts in parallel'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "status" -d 'Show every host\'s services: HOST, STACK, SERVICE, GOAL, STATE, SINCE'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "promote" -d 'Promote the canaries of the rollout waiting for it, and roll the other hosts out'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from fleet" -f -a "rollout" -d 'Rollouts of a desired state'
complete -c kapell -n "__fish_kapell_using_subcommand help; and __fish_seen_subcommand_from import" -f -a "compose" -d 'Turn a Docker Compose project into a stack file, reporting everything it cannot carry over'
