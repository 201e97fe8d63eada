//! Pure decisions of the datapath (no I/O): what to add and remove to reach a state.
