"""The reconciler's two kinds of work, run in worker threads, each ending in a result or an `Outcome` that says
why not and whether to try again: a build (in a child process, npuctl.agent.isolated) and a load."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from npuctl.agent.actuator import Actuator
from npuctl.agent.isolated import BuildCancelled, BuildDeadlineExceeded
from npuctl.agent.records import Outcome
from npuctl.artifacts import BuildResult
from npuctl.artifacts.errors import is_temporary
from npuctl.artifacts.result import ProgressCallback
from npuctl.runtime.placement import NotServable
from npuctl.schema import LoadedDeployment
from npuctl.schema.status import Reason
from npuctl.serve.models import ServedModel


async def build(actuator: Actuator, pool: ThreadPoolExecutor, loaded: LoadedDeployment, progress: ProgressCallback,
                stop: threading.Event) -> BuildResult | Outcome:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, actuator.build, loaded, progress, stop)
    except BuildCancelled:
        return Outcome.cancelled()
    except BuildDeadlineExceeded as exc:
        return Outcome.failed(Reason.BUILD_DEADLINE_EXCEEDED, str(exc), permanent=False)
    except Exception as exc:  # a failed build must never stop the loop
        return Outcome.failed(Reason.BUILD_FAILED, str(exc), permanent=not is_temporary(exc))


async def load(actuator: Actuator, pool: ThreadPoolExecutor, loaded: LoadedDeployment, built: BuildResult,
               share: str) -> ServedModel | Outcome:
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, actuator.load, loaded, built, share)
    except NotServable as exc:  # the rules forbid every place here: the same until the manifest changes
        return Outcome.failed(exc.reason, exc.message, permanent=True)
    except Exception as exc:
        return Outcome.failed(Reason.LOAD_FAILED, str(exc), permanent=not is_temporary(exc))
