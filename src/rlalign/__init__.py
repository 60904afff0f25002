from rlalign.version import __version__

__all__ = ["__version__"]


def _register_envs() -> None:
    # Gymnasium ids (rlalign/Driving-v0, ...) exist as soon as rlalign is imported. Entry points
    # are strings, so this imports neither torch nor the simulator.
    try:
        from rlalign.control.registration import register_envs
    except ImportError:  # pragma: no cover - gymnasium missing in a stripped-down install
        return
    register_envs()


_register_envs()
