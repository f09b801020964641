"""Which exceptions are the user's to fix (their message names the value, file or key and
what to do) and which are bugs (they keep their traceback)."""
from __future__ import annotations


def is_user_error(error: BaseException) -> bool:
    """True for the project's own error types and configuration errors."""
    from pipeline.config import ConfigError
    from pipeline.data import ShardError, ShareError
    from pipeline.data.cache import CacheError
    from pipeline.engines.base import DisagreementError, RankFailure
    from pipeline.launch.horovod import LaunchError
    from pipeline.manifest import ManifestError
    from pipeline.models import ModelError
    from pipeline.schema import SchemaError
    from pipeline.storage import StorageError
    from pipeline.train.checkpoint import CheckpointError
    from pipeline.train.run_dir import RunDirError

    ours = (ConfigError, ShardError, ShareError, CacheError, DisagreementError, RankFailure, LaunchError, ManifestError,
            ModelError, SchemaError, StorageError, CheckpointError, RunDirError)
    if isinstance(error, ours):
        return True
    try:  # these live beside pyspark, which may be absent where only training runs
        from pipeline.prep import PrepareError
        from pipeline.prep.raw import SourceError
        from pipeline.score import ScoreError
    except ImportError:
        return False
    from pipeline.predict.spark_compat import UnsupportedKeyType

    return isinstance(error, (PrepareError, SourceError, ScoreError, UnsupportedKeyType))


def lost_peer(error: BaseException) -> bool:
    """The engine reporting that another rank went away mid-collective (that rank's own
    error, or its host's loss, is the cause; this rank only noticed)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"HorovodInternalError", "DistBackendError", "DistNetworkError"}:
        return True
    text = str(error)
    return "gloo" in text.lower() and any(w in text for w in ("Connection closed", "Connection reset", "Read error", "Timed out"))
