"""The local kubelet of the dev cluster: the one node ``mmop-dev`` (:mod:`.node`), its scheduler
(:mod:`.scheduler`, with the resource arithmetic in :mod:`.resources`) and every pod bound to it
run as a local process (:mod:`.podworker`, :mod:`.podenv`, :mod:`.podvolumes`, :mod:`.probes`,
:mod:`.podstatus`) on its own loopback IP (:mod:`.ipam`). :mod:`.agent` drives them all."""
