# kapell %post: systemd runs kapell-generator at every daemon-reload, so a
# reload picks up the stacks already in /etc/kapell and the units of this
# package. Nothing is started.
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
