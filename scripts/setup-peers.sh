#!/usr/bin/env bash
# Install the third-party CoAP/OSCORE interop peers hopcore tests against.
#
#   * $REPO/.venv                       Python venv with aiocoap[oscore,linkheader,prettyprint]==0.4.17
#                                       (aiocoap-client, aiocoap-fileserver, aiocoap-proxy, library)
#   * $REPO/.peers/aiocoap-0.4.17/      the aiocoap sdist, for contrib/oscore-plugtest, with the
#                                       common-context/{a,b,c,d} dirs the sdist lacks recreated
#   * Debian packages                   libcoap3-bin (coap-client-notls, coap-server-notls),
#                                       tcpdump, tshark
#
# Works on a fresh machine, non-interactively (no stdin, CI=true), and is a fast
# no-op when everything is already there. See scripts/PEERS.md for how to run the peers.
#
# Environment knobs:
#   PYTHON=python3          interpreter used to create the venv
#   HOPCORE_SKIP_APT=1      do not touch Debian packages (e.g. unprivileged dev box)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PEERS="$REPO/.peers"
AIOCOAP_VERSION="0.4.17"
AIOCOAP_REQ="aiocoap[oscore,linkheader,prettyprint]==${AIOCOAP_VERSION}"
SDIST_DIR="$PEERS/aiocoap-${AIOCOAP_VERSION}"
PLUGTEST_DIR="$SDIST_DIR/contrib/oscore-plugtest"
APT_PACKAGES=(libcoap3-bin tcpdump tshark)
PYTHON="${PYTHON:-python3}"

export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

log() { printf '[setup-peers] %s\n' "$*" >&2; }
die() { printf '[setup-peers] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or passwordless sudo) to run: $*"
    fi
}

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

APT_UPDATED=0
apt_install() {
    # apt_install PKG... : install the given packages (update the lists once first).
    local apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold)
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update >/dev/null
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" \
        --no-install-recommends "$@" >/dev/null
}

setup_apt() {
    if [ "${HOPCORE_SKIP_APT:-0}" = "1" ]; then
        log "HOPCORE_SKIP_APT=1: not checking Debian packages"
        return
    fi
    local missing=() p
    for p in "${APT_PACKAGES[@]}"; do
        deb_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        return
    fi
    # tshark (wireshark-common) asks whether non-root users may capture.
    # Answer "no" up front so the install never prompts.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | as_root debconf-set-selections
    apt_install "${missing[@]}"
    for p in "${missing[@]}"; do
        deb_installed "$p" || die "Debian package $p did not install"
    done
}

# ---------------------------------------------------------------- Python venv + aiocoap
venv_ok() {
    [ -x "$VENV/bin/aiocoap-client" ] || return 1
    [ "$("$VENV/bin/aiocoap-client" --version 2>/dev/null)" = "aiocoap-client ${AIOCOAP_VERSION}" ] || return 1
    # All the extras the tools use must be importable, not only the base package.
    "$VENV/bin/python" - <<'EOF' 2>/dev/null || return 1
import aiocoap.defaults as d
missing = d.oscore_missing_modules() + d.linkheader_missing_modules() + d.prettyprint_missing_modules()
raise SystemExit(1 if missing else 0)
EOF
}

setup_venv() {
    if venv_ok; then
        return
    fi
    if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$VENV"
        if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
            # Debian's own python3 needs python3-venv for ensurepip.
            rm -rf "$VENV"
            log "'$PYTHON -m venv' failed; installing python3-venv"
            apt_install python3-venv
            "$PYTHON" -m venv "$VENV"
        fi
        log "created venv $VENV ($("$VENV/bin/python" --version 2>&1))"
    fi
    log "pip install $AIOCOAP_REQ"
    "$VENV/bin/python" -m pip install -q "$AIOCOAP_REQ"
    venv_ok || die "aiocoap ${AIOCOAP_VERSION} with extras is not usable in $VENV after install"
}

# ---------------------------------------------------------------- sdist + plugtest contexts
setup_sdist() {
    if [ ! -f "$PLUGTEST_DIR/plugtest-server" ] || [ ! -f "$PLUGTEST_DIR/plugtest_common.py" ]; then
        local dl
        dl="$(mktemp -d)"
        log "pip download aiocoap==${AIOCOAP_VERSION} sdist"
        "$VENV/bin/python" -m pip download -q "aiocoap==${AIOCOAP_VERSION}" \
            --no-binary :all: --no-deps -d "$dl"
        [ -f "$dl/aiocoap-${AIOCOAP_VERSION}.tar.gz" ] || die "sdist not found in $dl"
        mkdir -p "$PEERS"
        rm -rf "$SDIST_DIR"
        tar -xzf "$dl/aiocoap-${AIOCOAP_VERSION}.tar.gz" -C "$PEERS"
        rm -rf "$dl"
        [ -f "$PLUGTEST_DIR/plugtest-server" ] || die "sdist has no contrib/oscore-plugtest"
    fi
    write_plugtest_contexts
}

write_if_changed() {
    # write_if_changed FILE : stdin -> FILE, only touching FILE when content differs
    local f="$1" tmp
    tmp="$(mktemp)"
    cat >"$tmp"
    if [ -f "$f" ] && cmp -s "$tmp" "$f"; then
        rm -f "$tmp"
    else
        mkdir -p "$(dirname "$f")"
        mv "$tmp" "$f"
        chmod 644 "$f"
    fi
}

write_plugtest_contexts() {
    # The sdist omits contrib/oscore-plugtest/common-context/{a,b,c,d}; plugtest_common.py
    # copies common-context/<name> into the per-run context dir and loads it with
    # aiocoap.oscore.FilesystemSecurityContext, which reads settings.json + secret.json
    # (keys with _hex suffix are hex-decoded). Values: RFC 8613 Appendix C test vectors
    # as used by the OSCORE plugtests. a/c = client side, b/d = server side; c/d add an ID Context.
    local cc="$PLUGTEST_DIR/common-context" d
    for d in a b c d; do
        write_if_changed "$cc/$d/secret.json" <<'EOF'
{
  "secret_hex": "0102030405060708090a0b0c0d0e0f10",
  "salt_hex": "9e7ca92223786340"
}
EOF
    done
    write_if_changed "$cc/a/settings.json" <<'EOF'
{
  "algorithm": "AES-CCM-16-64-128",

  "sender-id_hex": "",
  "recipient-id_hex": "01"
}
EOF
    write_if_changed "$cc/b/settings.json" <<'EOF'
{
  "algorithm": "AES-CCM-16-64-128",

  "sender-id_hex": "01",
  "recipient-id_hex": ""
}
EOF
    write_if_changed "$cc/c/settings.json" <<'EOF'
{
  "algorithm": "AES-CCM-16-64-128",

  "sender-id_hex": "",
  "recipient-id_hex": "01",

  "id-context_hex": "37cbf3210017a2d3"
}
EOF
    write_if_changed "$cc/d/settings.json" <<'EOF'
{
  "algorithm": "AES-CCM-16-64-128",

  "sender-id_hex": "01",
  "recipient-id_hex": "",

  "id-context_hex": "37cbf3210017a2d3"
}
EOF
}

# ---------------------------------------------------------------- summary
print_versions() {
    local v
    echo "aiocoap:          $("$VENV/bin/aiocoap-client" --version) (aiocoap-client, aiocoap-fileserver, aiocoap-proxy in $VENV/bin)"
    v="$(sed -n 's/^Version: //p' "$SDIST_DIR/PKG-INFO" | head -n1)"
    echo "aiocoap plugtest: ${v} ($PLUGTEST_DIR, contexts a b c d)"
    if [ "${HOPCORE_SKIP_APT:-0}" = "1" ] && ! deb_installed libcoap3-bin; then
        echo "libcoap:          (skipped, HOPCORE_SKIP_APT=1)"
    else
        echo "libcoap:          $(dpkg-query -W -f='${Version}' libcoap3-bin) ($(command -v coap-client-notls), $(command -v coap-server-notls))"
        echo "tcpdump:          $(tcpdump --version 2>&1 | sed -n 's/^tcpdump version //p' | head -n1)"
        echo "tshark:           $(tshark --version 2>/dev/null | head -n1 | sed 's/^TShark (Wireshark) //')"
    fi
}

main() {
    local t0=$SECONDS
    setup_apt
    setup_venv
    setup_sdist
    print_versions
    log "done in $((SECONDS - t0))s"
}

main "$@"
