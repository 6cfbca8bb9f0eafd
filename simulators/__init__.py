"""Software substrates: the physics of each layer as pure functions over explicit state.

Each simulator module exposes typed parameter and state tuples and step functions
``step(input, state, params) -> (output, state)`` (Norse style), plus thin batched
helpers.  Nothing here keeps hidden global state.
"""
