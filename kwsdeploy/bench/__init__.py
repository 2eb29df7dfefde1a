"""`kwsdeploy benchmark`: what one more second of audio costs, per model x runtime x precision x mode."""
