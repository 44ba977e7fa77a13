"""Studies: stress tests, sensitivities and allocation optimisations as job resources.

``kinds`` is the registry of what a study can be, ``jobs`` the worker side of the built kinds, ``service``
the gRPC StudyService over them.
"""
