"""Where readings come from: the generator (and its control API) and the file emitter."""
