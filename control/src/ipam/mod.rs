//! Cluster-wide IPAM: a pure allocator over subnets, pools and static addresses.
