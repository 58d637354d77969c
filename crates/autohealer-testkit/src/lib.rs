//! Test-only: a fake kube-apiserver and a fake OpenStack as real HTTP servers on
//! 127.0.0.1, coupled into a simulated cluster. Never a dependency of a shipped crate.

pub mod apiserver;
pub mod cluster;
pub mod openstack;
pub mod sim;
