# The package's names for type checkers: __init__.py loads them on first use (PEP 562), which a type
# checker cannot follow. tests/test_typecheck.py checks that this list is __init__.py's _EXPORTS.
from jax_td3.config import ALGOS as ALGOS
from jax_td3.config import CONFIGS as CONFIGS
from jax_td3.config import DDPGConfig as DDPGConfig
from jax_td3.config import OurDDPGConfig as OurDDPGConfig
from jax_td3.config import SeedDDPGConfig as SeedDDPGConfig
from jax_td3.config import TD3Config as TD3Config
from jax_td3.config import config_for_env as config_for_env
from jax_td3.config import make_config as make_config
from jax_td3.errors import CheckpointError as CheckpointError
from jax_td3.errors import ConfigError as ConfigError
from jax_td3.errors import ConversionError as ConversionError
from jax_td3.errors import EnvError as EnvError
from jax_td3.errors import JaxTD3Error as JaxTD3Error
from jax_td3.errors import MissingExtraError as MissingExtraError
from jax_td3.errors import NonFiniteError as NonFiniteError
from jax_td3.run.training import train as train
from jax_td3.settings import TrainSettings as TrainSettings
from jax_td3.update import Batch as Batch
from jax_td3.update import TrainState as TrainState
from jax_td3.update import init_train_state as init_train_state
from jax_td3.update import update as update
from jax_td3.update import update_from_key as update_from_key
from jax_td3.update import update_with_internals as update_with_internals

__version__: str
__all__: list[str]
