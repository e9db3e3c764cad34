//! placeholder: drift between two snapshots (being written).
