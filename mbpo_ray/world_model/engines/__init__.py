"""World-model serving engines behind one interface; pick one by name with ``make_engine``."""

from mbpo_ray.world_model.engines.base import ENGINES, Imagined, WorldModelEngine, make_engine

__all__ = ["ENGINES", "Imagined", "WorldModelEngine", "make_engine"]
