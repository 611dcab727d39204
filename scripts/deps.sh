# Sourced by the other scripts: installs what building and testing ross needs on Debian.
# Each step is skipped when its tool is already there, so repeated runs cost nothing.

# Runs a command as root (directly, or through sudo when we are not root).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=
# apt_install PACKAGE... : installs the Debian packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}" >&2
  if [ -z "$APT_UPDATED" ]; then
    as_root apt-get update -qq
    APT_UPDATED=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Rust via rustup when cargo is missing, plus what the bundled libjpeg-turbo build needs and
# libavif (with libaom) for AVIF output, which ross links from Debian (docs/formats.md).
build_deps() {
  apt_install ca-certificates curl build-essential pkg-config cmake nasm libavif-dev
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
}

# The S3-compatible server the tests start (moto's server mode), in a virtual environment
# under target/ so nothing is installed system-wide. The tests look for it there.
TEST_ENV=target/test-env
MOTO_VERSION=5.2.5
test_python_env() {
  # icc-profiles-free: the Adobe RGB profile ../shared/acceptance/fidelity tags its files with.
  apt_install python3 python3-venv icc-profiles-free
  if [ -x "$TEST_ENV/bin/moto_server" ] &&
     "$TEST_ENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
    return 0
  fi
  echo "installing moto[server]==$MOTO_VERSION into $TEST_ENV" >&2
  python3 -m venv "$TEST_ENV"
  "$TEST_ENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
}

# Headless Chromium (Debian's, with its WebDriver) and playwright-core to drive it, for the
# admin page tests in tests/browser. Node.js is the machine's own; Debian's when it has none.
browser_deps() {
  apt_install chromium chromium-driver
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
    echo "installing playwright-core into tests/browser/node_modules" >&2
    (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Debian's nginx, for the deploy tests (started by the tests themselves with a temporary
# prefix; the package's own service is not needed), systemd-analyze (package systemd) to
# verify the unit, wrk for the load benchmark, and Prometheus (its server and promtool) to
# check deploy/prometheus.yml and its recording rules against a running cluster.
deploy_deps() {
  apt_install nginx systemd wrk prometheus
  cdn_deps
}

# Varnish with varnish-modules (xkey), the cache the CDN purge tests put in front of nginx.
# The tests start their own varnishd on free ports; the package's service is kept from
# starting while it installs (a policy-rc.d that refuses).
cdn_deps() {
  if ! dpkg -s varnish varnish-modules >/dev/null 2>&1; then
    local policy=/usr/sbin/policy-rc.d made=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
      as_root chmod 755 "$policy"
      made=1
    fi
    apt_install varnish varnish-modules
    [ -n "$made" ] && as_root rm -f "$policy"
  fi
  return 0
}

# cargo-deb, for the Debian package's test (tests/package.rs); without liblzma.
package_deps() {
  command -v cargo-deb >/dev/null 2>&1 || cargo install --locked --no-default-features cargo-deb
}
