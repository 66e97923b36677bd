# hopsdr %post: the hopsdr group, /run/hopsdr and /var/lib/hopsdr; on first install the service
# is enabled (started once the config is edited: systemctl start hopsdr); on upgrade restarted.
systemd-sysusers hopsdr.conf
systemd-tmpfiles --create hopsdr.conf
if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
if [ "$1" -eq 1 ]; then
    systemctl enable hopsdr.service >/dev/null 2>&1 || :
else
    systemctl try-restart hopsdr.service >/dev/null 2>&1 || :
fi
