"""kwsdeploy: keyword-spotting networks from training to small devices.

This file imports nothing heavy: `import kwsdeploy` never imports torch or touches CUDA.
"""

__version__ = "0.1.0"
