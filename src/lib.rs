//! hallgate: a data-exchange gateway for government-service platforms (政务服务数据交换网关).
//!
//! The modules follow the flow of a record (DESIGN.md section 1): [`ingress`] takes
//! the request, [`auth`] names and checks the sender, [`codec`] decodes the body,
//! [`record`] checks the canonical record, [`route`] picks destinations, [`store`]
//! commits it durably with its [`audit`] events, and [`delivery`] sends it on.
//! [`gateway`] wires them together; [`demo`] shows them working.
#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod codec;
pub mod config;
pub mod delivery;
pub mod demo;
pub mod gateway;
pub mod ingress;
pub mod limits;
pub mod mapping;
pub mod observe;
pub mod receiver;
pub mod record;
pub mod route;
pub mod store;
pub mod sync;
