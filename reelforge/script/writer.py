"""Which writer a production uses: the ``ScriptWriter`` protocol and the choice made from settings."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from reelforge.script.llm import LLMWriter
from reelforge.script.models import Brief, Script
from reelforge.script.offline import OfflineWriter
from reelforge.settings import LLMSettings, ScriptLimits


@runtime_checkable
class ScriptWriter(Protocol):
    """Anything that turns a brief into a validated script: ``OfflineWriter``, ``LLMWriter``."""

    @property
    def name(self) -> str:
        """Recorded on the script (``writer``): ``offline``, ``llm:<model>``."""
        ...

    async def write(self, brief: Brief, limits: ScriptLimits) -> Script:
        """A script that passed ``validate_script`` against ``limits``; ``BriefError`` for a bad brief."""
        ...


def make_writer(settings: LLMSettings) -> ScriptWriter:
    """The LLM writer when ``REELFORGE_LLM_BASE_URL`` is set, else the offline writer."""
    if settings.base_url:
        return LLMWriter(settings)
    return OfflineWriter()
