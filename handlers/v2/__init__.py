"""The Open Inference Protocol V2 (KServe V2, the protocol Triton, KServe and MLServer speak).

``tensors`` holds protocol-neutral tensors and how each model kind maps to them; ``dataplane``
answers the protocol's calls over the engine facade; ``rest`` is the HTTP/JSON edge (with the
binary tensor extension). The gRPC edge sits on the same data plane.
"""
