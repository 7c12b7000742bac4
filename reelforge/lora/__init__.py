"""LoRA files: validation, versioned records per character in the store, and an external trainer (docs/lora.md).

Import from here: ``from reelforge.lora import validate_lora, store_lora, ExternalTrainer``. The package uses
the store interface, hashing and liveness only (no ComfyUI, no preview worker, no Prefect); torch is optional
(the ``lora`` extra) and only cross-checks the values when installed.
"""

from reelforge.lora.errors import (
    LoraDatasetError,
    LoraError,
    LoraInvalid,
    LoraNotFound,
    LoraRecordError,
    LoraTrainingError,
    LoraUnreadable,
    TrainerCancelled,
    TrainerFailed,
    TrainerNoOutput,
    TrainerTimeout,
)
from reelforge.lora.keys import (
    lora_file_key,
    lora_prefix,
    lora_record_key,
    lora_verdict_key,
    lora_version_prefix,
    parse_lora_key,
)
from reelforge.lora.records import (
    LoraFields,
    LoraRecord,
    LoraVerdict,
    TrainingConfig,
    Verdict,
    latest_lora,
    list_loras,
    read_lora,
    record_verdict,
    store_lora,
)
from reelforge.lora.report import (
    DEFAULT_DTYPES,
    LORA_FAMILIES,
    LoraFamily,
    LoraLayout,
    LoraProblem,
    LoraReport,
    normalize_family,
)
from reelforge.lora.stage import external_train_stage, lora_check_stage
from reelforge.lora.trainconfig import TrainerFormat, TrainJob, ai_toolkit_config, kohya_config, toml_dumps
from reelforge.lora.trainer import ExternalTrainer, TrainProgress, check_dataset
from reelforge.lora.validate import DEFAULT_MAX_BYTES, validate_lora

__all__ = [
    "DEFAULT_DTYPES",
    "DEFAULT_MAX_BYTES",
    "LORA_FAMILIES",
    "ExternalTrainer",
    "LoraDatasetError",
    "LoraError",
    "LoraFamily",
    "LoraFields",
    "LoraInvalid",
    "LoraLayout",
    "LoraNotFound",
    "LoraProblem",
    "LoraRecord",
    "LoraRecordError",
    "LoraReport",
    "LoraTrainingError",
    "LoraUnreadable",
    "LoraVerdict",
    "TrainJob",
    "TrainProgress",
    "TrainerCancelled",
    "TrainerFailed",
    "TrainerFormat",
    "TrainerNoOutput",
    "TrainerTimeout",
    "TrainingConfig",
    "Verdict",
    "ai_toolkit_config",
    "check_dataset",
    "external_train_stage",
    "kohya_config",
    "latest_lora",
    "list_loras",
    "lora_check_stage",
    "lora_file_key",
    "lora_prefix",
    "lora_record_key",
    "lora_verdict_key",
    "lora_version_prefix",
    "normalize_family",
    "parse_lora_key",
    "read_lora",
    "record_verdict",
    "store_lora",
    "toml_dumps",
    "validate_lora",
]
