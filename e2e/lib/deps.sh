# Debian packages the test bed needs (sourced by e2e/cluster). Idempotent: apt runs only when a
# package is missing.

install_deps() {
    phase "debian packages"
    local missing=""
    for p in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=" $p"
    done
    if [ -z "$missing" ]; then
        log "all installed"
    else
        log "installing:$missing"
        apt-get update -qq
        # No package may start a daemon on install: the test bed starts its own.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
        rm -f /usr/sbin/policy-rc.d
        # The prometheus package is here for promtool only: keep its daemon from starting at boot
        # too (tests that need a Prometheus run their own, on their own port).
        if [[ " $missing " == *" prometheus "* ]]; then
            systemctl disable prometheus.service >/dev/null 2>&1 || true
        fi
    fi
    phase_end
}
