"""Cluster mode: engines as Ray actors on the nodes with room, jobs as runners on any node.

The daemon stays the one API, queue, store and database; ``connect`` joins the Ray cluster, each node
becomes a device of the kernel's ``DevicePool`` and ``ClusterLoader`` builds engines there.
"""

from llmos.cluster.engines import ClusterLoader
from llmos.cluster.jobs import RaySpawn
from llmos.cluster.ray_cluster import RayCluster, connect

__all__ = ["ClusterLoader", "RayCluster", "RaySpawn", "connect"]
