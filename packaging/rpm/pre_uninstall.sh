# kapell %preun: on erase ($1 = 0, not on upgrade), stop the units kapell
# generated (marked X-Kapell-Stack=): without kapell their unit files disappear
# at the next daemon-reload and container services lose their supervisor.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    units=""
    for file in /run/systemd/generator/*.target /run/systemd/generator/*.service; do
        [ -f "$file" ] && grep -q '^X-Kapell-Stack=' "$file" || continue
        name=${file##*/}
        case "$name" in
            *@.service) name="${name%@.service}@*.service" ;;
        esac
        units="$units $name"
    done
    if [ -n "$units" ]; then
        set -f  # the @*.service patterns are for systemctl, not the shell
        systemctl --system stop $units || :
    fi
fi
