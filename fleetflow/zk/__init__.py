"""The ZooKeeper front end: fleetflow as a nodepool launcher for Zuul.

Zuul asks for nodes by writing NodeRequests under ``/nodepool/requests``
and reads the Node znodes a launcher writes under ``/nodepool/nodes``
(``nodepool-protocol.md`` maps the protocol). The front end turns each
NodeRequest it takes into a request row of the node store, which the
launcher serves as it serves any other (the same pools, quota and spares),
and mirrors the outcome back: Node znodes for the nodes, the request
fulfilled or declined. The store and the flows stay the source of truth;
ZooKeeper shows Zuul what it must see, and Zuul's changes to its nodes
(in-use, used, hold) come back into the store.
"""
