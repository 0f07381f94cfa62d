"""The local router standing in for the mesh / gateway: the HTTP proxy (:mod:`.proxy`), its pure
routing decisions (:mod:`.decisions`) and the minimal CRDs of the routing kinds the operator
writes (:mod:`.meshcrds`)."""
