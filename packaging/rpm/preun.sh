# hopsdr %preun: on erase (not upgrade) the service is stopped and disabled.
if [ "$1" -eq 0 ]; then
    systemctl stop hopsdr.service >/dev/null 2>&1 || :
    systemctl disable hopsdr.service >/dev/null 2>&1 || :
fi
