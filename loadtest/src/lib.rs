//! Load tester for linkloop. The driver arrives in a later change; this crate
//! reserves the workspace slot and the `linkloop-loadtest` binary name.
