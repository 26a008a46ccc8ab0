# Shared environment for the scripts (sourced, not run).
export TETE_HOME="${TETE_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/tete}"
# Mesa's Vulkan driver looks for a runtime dir and complains on every start without one.
if [[ -z "${XDG_RUNTIME_DIR:-}" ]]; then
  export XDG_RUNTIME_DIR="/tmp/tete-runtime-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi
