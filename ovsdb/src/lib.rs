//! FerrOVN's OVSDB client: RFC 7047 plus the OVS extensions OVN relies on.
