//! The enabled modules per per-event hook ([`HookLists`]): built from each
//! module's [`Module::hooks`] (see [`crate::hooks`]) when the server builds
//! its modules (start-up and `reload_config`), kept with them, and what
//! the server calls each hook through, so a message calls only the modules
//! that implement a hook.
//!
//! Invariants: each list is a subsequence of the modules in configuration
//! order; a module is on a hook's list exactly when its `hooks()` contains
//! the hook (a module that declares nothing is on every list).

use std::sync::Arc;

use crate::hooks::Hooks;
use crate::module::Module;

/// The enabled modules that implement each hook, in configuration order
/// (each list a subsequence of the modules): what the server calls a hook
/// through. Built from [`Module::hooks`] with the modules.
#[derive(Clone, Default)]
pub struct HookLists {
    pub filter_inbound: Vec<Arc<dyn Module>>,
    pub filter_outbound: Vec<Arc<dyn Module>>,
    pub message_from_session: Vec<Arc<dyn Module>>,
    pub filter_message_to_account: Vec<Arc<dyn Module>>,
    pub message_delivered: Vec<Arc<dyn Module>>,
    pub message_stored_offline: Vec<Arc<dyn Module>>,
    pub session_opened: Vec<Arc<dyn Module>>,
    pub session_closed: Vec<Arc<dyn Module>>,
    pub presence_available: Vec<Arc<dyn Module>>,
    pub room_mention: Vec<Arc<dyn Module>>,
    pub tick: Vec<Arc<dyn Module>>,
}

impl HookLists {
    /// The lists for these modules (in this order).
    pub fn new(modules: &[Arc<dyn Module>]) -> HookLists {
        let mut lists = HookLists::default();
        for m in modules {
            let hooks = m.hooks();
            for (hook, _, _) in Hooks::NAMED {
                if hooks.contains(hook) {
                    lists.list_mut(hook).push(m.clone());
                }
            }
        }
        lists
    }

    /// The list of one hook (a constant of [`Hooks::NAMED`]).
    pub fn list(&self, hook: Hooks) -> &[Arc<dyn Module>] {
        let lists = [
            &self.filter_inbound,
            &self.filter_outbound,
            &self.message_from_session,
            &self.filter_message_to_account,
            &self.message_delivered,
            &self.message_stored_offline,
            &self.session_opened,
            &self.session_closed,
            &self.presence_available,
            &self.room_mention,
            &self.tick,
        ];
        let i = Hooks::NAMED
            .iter()
            .position(|(h, _, _)| *h == hook)
            .expect("one hook of Hooks::NAMED");
        lists[i]
    }

    fn list_mut(&mut self, hook: Hooks) -> &mut Vec<Arc<dyn Module>> {
        let i = Hooks::NAMED
            .iter()
            .position(|(h, _, _)| *h == hook)
            .expect("one hook of Hooks::NAMED");
        [
            &mut self.filter_inbound,
            &mut self.filter_outbound,
            &mut self.message_from_session,
            &mut self.filter_message_to_account,
            &mut self.message_delivered,
            &mut self.message_stored_offline,
            &mut self.session_opened,
            &mut self.session_closed,
            &mut self.presence_available,
            &mut self.room_mention,
            &mut self.tick,
        ]
        .into_iter()
        .nth(i)
        .expect("a list per hook")
    }

    /// The names of the modules on one hook's list (for tests and logs).
    pub fn names(&self, hook: Hooks) -> Vec<&'static str> {
        self.list(hook).iter().map(|m| m.name()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Declared(Hooks, &'static str);
    impl Module for Declared {
        fn name(&self) -> &'static str {
            self.1
        }
        fn hooks(&self) -> Hooks {
            self.0
        }
    }
    struct Undeclared;
    impl Module for Undeclared {
        fn name(&self) -> &'static str {
            "undeclared"
        }
    }

    #[test]
    fn a_list_per_hook_in_module_order_and_undeclared_means_every_hook() {
        let modules: Vec<Arc<dyn Module>> = vec![
            Arc::new(Declared(Hooks::FILTER_INBOUND | Hooks::TICK, "a")),
            Arc::new(Undeclared),
            Arc::new(Declared(Hooks::NONE, "none")),
            Arc::new(Declared(Hooks::TICK | Hooks::MESSAGE_DELIVERED, "b")),
        ];
        let lists = HookLists::new(&modules);
        assert_eq!(lists.names(Hooks::FILTER_INBOUND), ["a", "undeclared"]);
        assert_eq!(lists.names(Hooks::TICK), ["a", "undeclared", "b"]);
        assert_eq!(lists.names(Hooks::MESSAGE_DELIVERED), ["undeclared", "b"]);
        for (hook, _, _) in Hooks::NAMED {
            assert!(lists.names(hook).contains(&"undeclared"), "{hook:?}");
            assert!(!lists.names(hook).contains(&"none"), "{hook:?}");
        }
        // Each field is the list of its hook (the server reads the fields).
        type Field = fn(&HookLists) -> &Vec<Arc<dyn Module>>;
        let fields: [(Hooks, Field); 11] = [
            (Hooks::FILTER_INBOUND, |l| &l.filter_inbound),
            (Hooks::FILTER_OUTBOUND, |l| &l.filter_outbound),
            (Hooks::MESSAGE_FROM_SESSION, |l| &l.message_from_session),
            (Hooks::FILTER_MESSAGE_TO_ACCOUNT, |l| {
                &l.filter_message_to_account
            }),
            (Hooks::MESSAGE_DELIVERED, |l| &l.message_delivered),
            (Hooks::MESSAGE_STORED_OFFLINE, |l| &l.message_stored_offline),
            (Hooks::SESSION_OPENED, |l| &l.session_opened),
            (Hooks::SESSION_CLOSED, |l| &l.session_closed),
            (Hooks::PRESENCE_AVAILABLE, |l| &l.presence_available),
            (Hooks::ROOM_MENTION, |l| &l.room_mention),
            (Hooks::TICK, |l| &l.tick),
        ];
        for (hook, _) in fields {
            let one = HookLists::new(&[Arc::new(Declared(hook, "one")) as _]);
            for (other, other_field) in fields {
                let want = usize::from(other == hook);
                assert_eq!(other_field(&one).len(), want, "{hook:?} / {other:?}");
                assert_eq!(one.list(other).len(), want, "{hook:?} / {other:?}");
            }
        }
    }
}
