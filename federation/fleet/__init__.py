"""Fleet statements: binding `Edge e`, planning fragments across edges, running and merging them."""
from .catalog import DeviceFacts, FleetCatalog
from .plan import FleetPlan, FleetPlanner
from .service import FleetResult, QueryService

__all__ = ["DeviceFacts", "FleetCatalog", "FleetPlan", "FleetPlanner", "FleetResult", "QueryService"]
