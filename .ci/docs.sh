#!/usr/bin/env bash
# Build the documentation site in strict mode: a broken link or anchor, a page missing from
# the nav, or an API reference that does not resolve fails the build. Installs the `docs`
# extra into .venv-docs (once; later runs reuse it). Output: site/.
#
#   bash .ci/docs.sh            # build
#   bash .ci/docs.sh serve      # preview at http://127.0.0.1:8000
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
venv=.venv-docs
[ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
stamp="$venv/.installed"
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then     # (re)install when it changed
  timeout 600 "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[docs]"
  touch "$stamp"
fi
export NO_MKDOCS_2_WARNING=1
if [ "${1:-build}" = serve ]; then
  exec "$venv/bin/mkdocs" serve
fi
timeout 300 "$venv/bin/mkdocs" build --strict --site-dir site
echo "docs: built site/ (strict)"
