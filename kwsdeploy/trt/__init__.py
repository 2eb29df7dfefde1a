"""TensorRT: parser compatibility check, engine build, trtexec command lines (imports nothing heavy)."""
