# kapell %postun: reload systemd so the generator's units go away with it.
# /etc/kapell keeps the operator's stacks and secrets: rpm removes only the
# package's README (and the directory if it is then empty).
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
