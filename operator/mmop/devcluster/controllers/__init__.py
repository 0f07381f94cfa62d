"""Controllers of the dev cluster that turn objects into other objects: the Deployment controller
(:mod:`.deployment`, its pure decisions in :mod:`.deployment_decisions`)."""
