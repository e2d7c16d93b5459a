//! cprkit's engine: the parts that start VMMs, sit on their channels, inject
//! faults, observe, and judge.
//!
//! - [`plan`]: fault points and the guest's state, with [`steps`] and
//!   [`faults`] (each fault kind and how it is injected): the names used everywhere;
//!   [`schedule`]: the faults, channel holds and device delay of one trial;
//! - [`adapter`]: the contract a VMM wrapper meets;
//! - [`process`] and [`procinfo`], [`trialdir`], [`unixnet`], [`guestmem`]: processes, private
//!   directories, socket readiness, and guest memory seen from outside;
//!   [`runowner`]: who owns a run directory, and removing those of kits gone;
//! - [`interposer`]: the man in the middle on the cpr and main channels;
//! - [`device`]: the kit's vhost device daemon in a trial;
//! - [`timeline`] and [`record`]: what a trial observed;
//! - [`trial`]: one trial, from start to final readings;
//! - [`rules`]: a checker per contract rule; [`outcome`]: the snapshot form;
//!   [`explain`]: the two-column drawing; [`leaks`]: nothing left behind.

pub mod adapter;
pub mod bare;
pub mod device;
pub mod explain;
pub mod faults;
pub mod guestmem;
pub mod interposer;
pub mod launcher;
pub mod leaks;
pub mod loadgate;
pub mod outcome;
pub mod plan;
pub mod process;
pub mod procinfo;
pub mod record;
pub mod rules;
pub mod runowner;
pub mod scenario;
pub mod schedule;
pub mod steps;
pub mod timeline;
pub mod trial;
pub mod trialdir;
pub mod unixnet;
