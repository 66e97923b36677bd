//! Tests of the test-bed itself (being written).
