#![no_std]
// Exists so the loader can declare a build-dependency on this crate (cache invalidation).
