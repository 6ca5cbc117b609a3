#!/usr/bin/env bash
# Installs RackWarden as a systemd service: venv in /opt/rackwarden/venv, config in /etc/rackwarden, the unit in /etc/systemd/system.
#
# State lives in /var/lib/rackwarden, made by systemd itself (StateDirectory=rackwarden with
# DynamicUser=yes: really /var/lib/private/rackwarden, owned by the service's transient user),
# so this script does not create it.
#
# Usage: scripts/install.sh [options]          (run as root from a checkout)
#   --destdir DIR       stage everything under DIR (also $DESTDIR); nothing outside DIR is
#                       touched and systemctl is not called. Paths written into the unit stay
#                       the final ones. A venv is not relocatable: the staged venv's scripts
#                       point into DIR, so build images by running this inside the image root.
#   --prefix DIR        install root, default /opt/rackwarden (README and share/ go here)
#   --venv DIR          the venv, default PREFIX/venv
#   --confdir DIR       default /etc/rackwarden
#   --unitdir DIR       default /etc/systemd/system
#   --span              also install the SPAN-capture drop-in (CAP_NET_RAW); without it an
#                       earlier span.conf is removed
#   --no-venv           leave the venv alone: only refresh the unit, its drop-ins and config
#                       (run this after adding a file to CONFDIR/credentials)
#   --python PY         the Python that creates the venv, default /usr/bin/python3 (needs the
#                       python3-venv package on Debian)
#   --build-python PY   the Python that builds the wheel, default the venv's own
#   --pip-args "ARGS"   extra arguments for every pip call, e.g. "--no-index --find-links
#                       /srv/wheelhouse" on a host without PyPI
#   --render-unit       print the unit with the paths above and exit
#
# It never overwrites CONFDIR/rackwarden.yaml or CONFDIR/rackwarden.env once they exist.
set -euo pipefail

SRC=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=/opt/rackwarden
VENV=""
CONFDIR=/etc/rackwarden
UNITDIR=/etc/systemd/system
PYTHON=/usr/bin/python3
BUILD_PYTHON=""
PIP_ARGS=""
SPAN=0
DO_VENV=1
RENDER=0

die() { echo "install.sh: $*" >&2; exit 2; }
say() { echo "install.sh: $*"; }

need_arg() { [ $# -ge 2 ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --destdir) need_arg "$@"; DESTDIR=$2; shift 2 ;;
        --prefix) need_arg "$@"; PREFIX=$2; shift 2 ;;
        --venv) need_arg "$@"; VENV=$2; shift 2 ;;
        --confdir) need_arg "$@"; CONFDIR=$2; shift 2 ;;
        --unitdir) need_arg "$@"; UNITDIR=$2; shift 2 ;;
        --python) need_arg "$@"; PYTHON=$2; shift 2 ;;
        --build-python) need_arg "$@"; BUILD_PYTHON=$2; shift 2 ;;
        --pip-args) need_arg "$@"; PIP_ARGS=$2; shift 2 ;;
        --span) SPAN=1; shift ;;
        --no-venv) DO_VENV=0; shift ;;
        --render-unit) RENDER=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
done
VENV=${VENV:-$PREFIX/venv}

# These paths go into the unit through sed and into systemd's own syntax: keep them plain.
for name in PREFIX VENV CONFDIR UNITDIR; do
    value=${!name}
    [[ $value == /* ]] || die "--${name,,} must be an absolute path, got '$value'"
    [[ $value =~ ^[A-Za-z0-9._/+-]+$ ]] || die "--${name,,} '$value': use letters, digits and ._/+- only"
done
if [ -n "$DESTDIR" ]; then
    mkdir -p -- "$DESTDIR"
    DESTDIR=$(cd -- "$DESTDIR" && pwd)
fi

render_unit() {
    sed -e "s|/opt/rackwarden/venv|$VENV|g" \
        -e "s|/etc/rackwarden|$CONFDIR|g" \
        -e "s|/opt/rackwarden|$PREFIX|g" \
        "$SRC/systemd/rackwarden.service"
}

if [ "$RENDER" = 1 ]; then
    render_unit
    exit 0
fi

at() { printf '%s%s' "$DESTDIR" "$1"; }  # where a final path is staged

[ -n "$DESTDIR" ] || [ "$(id -u)" = 0 ] || die "run as root, or give --destdir to stage"

install -d -m 0755 "$(at "$PREFIX")" "$(at "$PREFIX")/share" "$(at "$CONFDIR")" "$(at "$UNITDIR")"
# Credentials are read by systemd (as root) and handed to the service: nobody else needs them.
if [ ! -d "$(at "$CONFDIR")/credentials" ]; then
    install -d -m 0700 "$(at "$CONFDIR")/credentials"
fi

# --- the venv -------------------------------------------------------------------------------
if [ "$DO_VENV" = 1 ]; then
    venv=$(at "$VENV")
    if [ ! -x "$venv/bin/python" ]; then
        say "creating the venv $VENV with $PYTHON"
        "$PYTHON" -m venv "$venv"
    fi
    work=$(mktemp -d)
    trap 'rm -rf -- "$work"' EXIT
    # Build from a copy: a build writes build/ and *.egg-info next to its sources.
    mkdir "$work/src"
    cp -r "$SRC/agent" "$SRC/drivers" "$SRC/policies" "$SRC/pyproject.toml" "$SRC/README.md" "$work/src/"
    find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
    build_python=${BUILD_PYTHON:-$venv/bin/python}
    say "building the wheel with $build_python"
    # shellcheck disable=SC2086  # PIP_ARGS is a list of arguments on purpose
    "$build_python" -m pip wheel --quiet --no-deps $PIP_ARGS -w "$work/wheels" "$work/src"
    wheel=$(ls "$work"/wheels/rackwarden-*.whl)
    say "installing $(basename "$wheel") into $VENV"
    had_it=0
    "$venv/bin/python" -m pip show --quiet rackwarden >/dev/null 2>&1 && had_it=1
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --quiet $PIP_ARGS "$wheel"
    if [ "$had_it" = 1 ]; then
        # pip keeps an installed copy of the same version: replace it, dependencies as they are.
        # shellcheck disable=SC2086
        "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall $PIP_ARGS "$wheel"
    fi
fi

# --- documentation and shipped operations config ---------------------------------------------
share=$(at "$PREFIX")/share
install -d -m 0755 "$share/prometheus" "$share/alertmanager" "$share/grafana" "$share/systemd"
install -m 0644 "$SRC/README.md" "$(at "$PREFIX")/README.md"
install -m 0644 "$SRC/config/prometheus/rules.yml" "$SRC/config/prometheus/rules_test.yml" \
    "$SRC/config/prometheus/prometheus.yml" "$SRC/config/prometheus/web-config.example.yml" \
    "$share/prometheus/"
install -m 0644 "$SRC/config/alertmanager/example.yml" "$share/alertmanager/"
install -m 0644 "$SRC/config/grafana/rackwarden.json" "$share/grafana/"
install -m 0644 "$SRC/config/example.yaml" "$share/rackwarden.example.yaml"
install -m 0644 "$SRC/systemd/rackwarden-span.conf" "$share/systemd/"

# --- configuration: installed once, then the operator's -------------------------------------
conf=$(at "$CONFDIR")
if [ ! -e "$conf/rackwarden.yaml" ]; then
    # Readable by the service's dynamic user; secrets belong in credentials/, not in here.
    install -m 0644 "$SRC/config/example.yaml" "$conf/rackwarden.yaml"
    say "installed the example config $CONFDIR/rackwarden.yaml: edit it before starting"
else
    say "kept the existing $CONFDIR/rackwarden.yaml"
fi
if [ ! -e "$conf/rackwarden.env" ]; then
    install -m 0644 "$SRC/systemd/rackwarden.env" "$conf/rackwarden.env"
fi

# --- the unit and its drop-ins ---------------------------------------------------------------
unitdir=$(at "$UNITDIR")
render_unit > "$unitdir/rackwarden.service.tmp"
chmod 0644 "$unitdir/rackwarden.service.tmp"
mv -f "$unitdir/rackwarden.service.tmp" "$unitdir/rackwarden.service"
dropins=$unitdir/rackwarden.service.d
install -d -m 0755 "$dropins"
if [ "$SPAN" = 1 ]; then
    install -m 0644 "$SRC/systemd/rackwarden-span.conf" "$dropins/span.conf"
else
    rm -f -- "$dropins/span.conf"
fi

# One LoadCredential= per file in credentials/, so the config's {credential: NAME} resolves.
creds=()
while IFS= read -r -d '' f; do
    name=$(basename -- "$f")
    if [[ ! $name =~ ^[A-Za-z0-9_.-]+$ ]]; then
        say "skipping credential '$name': use letters, digits and ._- in its file name"
        continue
    fi
    if [ -n "$(find "$f" -perm /077)" ]; then
        say "warning: $CONFDIR/credentials/$name is readable by others: chmod 600 it"
    fi
    creds+=("$name")
done < <(find "$conf/credentials" -maxdepth 1 -type f -print0 | sort -z)
if [ ${#creds[@]} -gt 0 ]; then
    {
        echo "# Written by scripts/install.sh from the files in $CONFDIR/credentials;"
        echo "# re-run it (with --no-venv) after adding or removing one."
        echo "[Service]"
        for name in "${creds[@]}"; do
            echo "LoadCredential=$name:$CONFDIR/credentials/$name"
        done
    } > "$dropins/credentials.conf"
    chmod 0644 "$dropins/credentials.conf"
else
    rm -f -- "$dropins/credentials.conf"
fi

# --- check and tell ----------------------------------------------------------------------
if [ -x "$(at "$VENV")/bin/rackwarden" ]; then
    if CREDENTIALS_DIRECTORY="$conf/credentials" "$(at "$VENV")/bin/rackwarden" check-config \
            "$conf/rackwarden.yaml"; then
        :
    else
        say "the config does not pass check-config yet: fix it before starting the service"
    fi
fi
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
say "done. Next: edit $CONFDIR/rackwarden.yaml, put secrets in $CONFDIR/credentials/ (mode 600)"
say "and re-run with --no-venv, then: systemctl enable --now rackwarden"
