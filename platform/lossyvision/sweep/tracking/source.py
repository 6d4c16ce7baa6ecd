"""MLflow's source tags for the lossyvision code that runs (its git commit, branch, remote and dirtiness)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import lossyvision


@lru_cache(maxsize=1)
def source_tags() -> dict[str, str]:
    """MLflow's source tags for the lossyvision code that runs: its git commit, branch, remote, dirtiness.

    Taken from the repository holding the ``lossyvision`` package (not the current folder, not the
    entry point's), and only where there is one: an installed package (a container) has none.
    """
    from mlflow.utils import mlflow_tags
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url

    path = str(Path(lossyvision.__file__).parent)
    tags = {mlflow_tags.MLFLOW_SOURCE_NAME: "lossyvision", mlflow_tags.MLFLOW_SOURCE_TYPE: "LOCAL",
            "lossyvision.version": lossyvision.__version__}
    commit = get_git_commit(path)
    if commit:
        tags[mlflow_tags.MLFLOW_GIT_COMMIT] = commit
        for key, value in ((mlflow_tags.MLFLOW_GIT_BRANCH, get_git_branch(path)),
                           (mlflow_tags.MLFLOW_GIT_REPO_URL, get_git_repo_url(path)),
                           (mlflow_tags.MLFLOW_GIT_DIRTY, _git_dirty(path))):
            if value is not None:
                tags[key] = value
    return tags


def _git_dirty(path: str) -> str | None:
    try:
        from git import Repo

        return str(Repo(path, search_parent_directories=True).is_dirty(untracked_files=False)).lower()
    except Exception:  # noqa: BLE001 - no git executable, a damaged repository: leave the tag out
        return None
