//! `hopsdr-testbed`: the simulated Hopsworks cluster (being written).

fn main() {}
