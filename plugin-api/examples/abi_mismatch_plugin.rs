//! Test fixture: a library that claims to be a ross mode plugin but was built against a
//! different layout of the root module (as a plugin built against an incompatible
//! plugin-api would be). The loader must refuse it with a short message, and keep serving. Its
//! version string is its package's (0.1.x), so it is checked as a plugin of the closed line 0.1.
#![allow(non_local_definitions, non_camel_case_types, missing_docs)]

use abi_stable::library::RootModule;
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::{declare_root_module_statics, package_version_strings, StableAbi};

#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModule_Ref)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    #[sabi(last_prefix_field)]
    pub modes: extern "C" fn() -> u64,
}

impl RootModule for PluginModule_Ref {
    declare_root_module_statics! {PluginModule_Ref}
    const BASE_NAME: &'static str = "ross_mode";
    const NAME: &'static str = "ross mode plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

extern "C" fn modes() -> u64 {
    7
}

#[abi_stable::export_root_module]
pub fn instantiate_root_module() -> PluginModule_Ref {
    PluginModule { modes }.leak_into_prefix()
}
