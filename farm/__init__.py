"""farm: a sandbox for comparing preference-learning (RLHF) methods with simulated and real judges.

Shared shapes (see ../shared/DESIGN.md): `Pair`, a preference float P(output_2 > output_1) in [0, 1]
(None = invalid), `Annotation`, `Rollout`. Everything else hangs off these.
"""

from farm.errors import FarmError
from farm.types import Annotation, Pair

__version__ = "0.1.0"
__all__ = ["Annotation", "FarmError", "Pair", "__version__"]
