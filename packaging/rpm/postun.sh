# hopsdr %postun: systemd forgets the unit on erase.
if [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi
