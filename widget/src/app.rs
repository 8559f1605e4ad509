//! The chat UI: launcher, panel, message list and input, in Leptos; and, for a site that keeps
//! conversations, the notice, feedback on answers and the hand-off to a person.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use confab_protocol::{ChatMessage, Role, WidgetConfig};
use leptos::prelude::*;
use leptos::reactive::owner::LocalStorage;
use leptos::task::spawn_local;
use wasm_bindgen_futures::JsFuture;
use web_sys::AbortController;

use crate::api::{self, ChatError, Live};
use crate::conversation::{self, Holder, Rating};
use crate::sources::{self, SourceLink};
use crate::storage::{self, Entry};
use crate::text::{self, Strings, Text};
use crate::{feedback, markdown};

/// How the page embedded the widget (`data-*` attributes of the script tag, resolved by the
/// loader). Visual settings here override the site's config from the relay.
#[derive(Debug, Clone, Default)]
pub struct Embed {
    pub relay: String,
    pub site_key: String,
    /// Where its conversations are stored (`storage::key`): the site key, and the chat's name
    /// if it has one.
    pub storage_key: String,
    /// The panel alone, filling the host element, always open; no launcher.
    pub inline: bool,
    pub open: bool,
    /// The visitor opened it (rather than `data-open`): the input takes the focus.
    pub focus: bool,
    pub title: Option<String>,
    pub greeting: Option<String>,
    pub color: Option<String>,
    /// The launcher sits on the left (`data-position="left"`, or a right-to-left page).
    pub left: bool,
    /// `rtl` or `ltr`.
    pub dir: String,
    /// `data-locale`, as the panel's `lang`.
    pub lang: Option<String>,
}

/// What the page's JavaScript (`window.Confab`) can do to a mounted widget.
#[derive(Debug, Clone, Copy)]
pub struct Controls {
    pub open: RwSignal<bool>,
    /// An inline chat: always open.
    pub inline: bool,
    /// A message to send, set by `Confab.send(text)`.
    pub outbox: RwSignal<Option<String>>,
    /// The visitor token (`data-visitor-token`, `Confab.identify`), sent with every message.
    pub visitor_token: RwSignal<Option<String>>,
    /// Whose conversation is shown: the loader's short hash of the visitor token's user id,
    /// empty for an anonymous visitor (see `storage::key`).
    pub identity: RwSignal<String>,
    /// Counts the conversations shown: [`Controls::switch_to`] starts a new one. An answer
    /// still streaming for an earlier one changes nothing when it ends.
    generation: StoredValue<u32>,
    /// Notified when the conversation shown is replaced.
    switched: Trigger,
    /// The answer in flight.
    request: StoredValue<Option<Flight>, LocalStorage>,
    /// Called with each event's name and detail, for the page (`Confab.on`, the package's
    /// handle).
    emitter: StoredValue<Option<js_sys::Function>, LocalStorage>,
    /// Set by [`Controls::shut`]: the chat is gone from the page.
    shut: StoredValue<bool>,
}

/// An answer in flight, and what stopping it takes: aborting its request and, once the relay
/// has named its stream, cancelling that (leaving it would not end its generation).
#[derive(Debug)]
struct Flight {
    abort: AbortController,
    /// The relay, the site key and the visitor token the answer was asked with: the caller the
    /// relay stops it for.
    caller: (String, String, Option<String>),
    stream: Rc<RefCell<Option<String>>>,
}

impl Flight {
    fn stop(&self) {
        self.abort.abort();
        if let Some(stream) = self.stream.borrow().clone() {
            let (relay, key, visitor) = self.caller.clone();
            spawn_local(async move {
                let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
                api::cancel(caller, &stream).await;
            });
        }
        // An answer waiting to follow its stream again notices at once.
        api::nudge();
    }
}

/// What an answer is streamed for.
enum Ask {
    /// The conversation, ending with the visitor's question.
    Question(Vec<ChatMessage>),
    /// The answer the relay was streaming when the page was left (reloaded, navigated), with
    /// its request id if the relay keeps the conversation.
    Resume(String, Option<String>),
}

impl Controls {
    pub fn new(
        open: bool,
        inline: bool,
        visitor_token: Option<String>,
        identity: String,
        emitter: Option<js_sys::Function>,
    ) -> Self {
        Self {
            open: RwSignal::new(open),
            inline,
            outbox: RwSignal::new(None),
            visitor_token: RwSignal::new(visitor_token),
            identity: RwSignal::new(identity),
            generation: StoredValue::new(0),
            switched: Trigger::new(),
            request: StoredValue::new_local(None),
            emitter: StoredValue::new_local(emitter),
            shut: StoredValue::new(false),
        }
    }

    /// The chat is being removed from the page (`Widget::destroy`): the answer in flight is
    /// stopped, and every task still waiting on the network finds, when it wakes, that its
    /// conversation is no longer shown (the generation moved on) and touches nothing.
    pub fn shut(&self) {
        self.abort();
        // The last answer's request (its abort controller and the visitor's token) goes too.
        self.request.set_value(None);
        self.shut.set_value(true);
        self.generation.update_value(|g| *g += 1);
        self.emitter.set_value(None);
    }

    /// Whether the chat is still on the page.
    fn live(&self) -> bool {
        !self.shut.get_value()
    }

    /// Tells the page's listeners what happened.
    fn emit(&self, name: &str, detail: &str) {
        if let Some(emit) = self.emitter.get_value() {
            let _ = emit.call2(&wasm_bindgen::JsValue::NULL, &name.into(), &detail.into());
        }
    }

    /// Shows the conversation of `identity` instead of the current one (another user signed
    /// in, or `Confab.reset()`): the request in flight is aborted at once, and the chat empties
    /// the panel and loads the new identity's conversation.
    pub fn switch_to(&self, identity: String) {
        self.abort();
        self.identity.set(identity);
        self.generation.update_value(|g| *g += 1);
        self.switched.notify();
    }

    fn abort(&self) {
        self.request.with_value(|request| {
            if let Some(request) = request {
                request.stop();
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
struct Message {
    id: usize,
    role: Role,
    text: RwSignal<String>,
    /// A complete answer of a conversation the relay keeps: its request id (feedback names it).
    request: RwSignal<Option<String>>,
    rating: RwSignal<Option<Rating>>,
    /// Written by a person, not the model.
    person: bool,
    /// The site's documents the answer is grounded in, shown under it.
    sources: RwSignal<Vec<SourceLink>>,
}

impl Message {
    fn entry(&self) -> Entry {
        Entry {
            role: self.role,
            content: self.text.get_untracked(),
            request: self.request.get_untracked(),
            rating: self.rating.get_untracked(),
            person: self.person,
            sources: self.sources.get_untracked(),
        }
    }
}

/// `#rgb` or `#rrggbb` as 0..=255 channels; anything else is not a colour we can reason about.
fn parse_hex(color: &str) -> Option<[u8; 3]> {
    let hex = color.strip_prefix('#')?;
    let digit = |i: usize| u8::from_str_radix(hex.get(i..i + 1)?, 16).ok();
    match hex.len() {
        3 => Some([digit(0)? * 17, digit(1)? * 17, digit(2)? * 17]),
        6 => {
            let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
            Some([byte(0)?, byte(2)?, byte(4)?])
        }
        _ => None,
    }
}

/// The text colour for buttons and bubbles on `primary`: white where it meets WCAG AA (4.5:1),
/// otherwise near-black, so that any brand colour stays readable.
fn on_color(primary: [u8; 3]) -> &'static str {
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
    };
    let [r, g, b] = primary.map(linear);
    let luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
    if 1.05 / (luminance + 0.05) >= 4.5 { "#fff" } else { "#111" }
}

#[component]
pub fn Chat(embed: Embed, controls: Controls, strings: Strings) -> impl IntoView {
    // The chat's texts (see `text`), and one of them by its name.
    let strings = StoredValue::new_local(strings);
    let t = move |text: Text| strings.try_with_value(|s| s.get(text)).unwrap_or_default();
    let said = move |e: &ChatError| strings.try_with_value(|s| e.message(s)).unwrap_or_default();
    let open = controls.open;
    let config = RwSignal::new(None::<WidgetConfig>);
    let messages = RwSignal::new(Vec::<Message>::new());
    let next_id = StoredValue::new(0usize);
    let draft = RwSignal::new(String::new());
    let error = RwSignal::new(None::<ChatError>);
    let busy = RwSignal::new(false);
    // The latest complete answer, for screen readers (an `aria-live` region).
    let announce = RwSignal::new(String::new());
    let controller = controls.request;
    let root_ref = NodeRef::<leptos::html::Div>::new();
    let list_ref = NodeRef::<leptos::html::Ol>::new();
    let input_ref = NodeRef::<leptos::html::Textarea>::new();
    let launcher_ref = NodeRef::<leptos::html::Button>::new();
    // Opened by the page on load (`data-open`): don't take the focus away from the page.
    let quiet_open = StoredValue::new(embed.open && !embed.focus);
    // Follow the answer down unless the visitor scrolled up to read.
    let stick_to_bottom = StoredValue::new(true);
    let embed = StoredValue::new(embed);
    let storage_key = StoredValue::new(embed.with_value(|e| e.storage_key.clone()));
    let identity = controls.identity;
    // Where the conversation shown is stored: the site key and the identity.
    let slot = move || (storage_key.try_get_value().unwrap_or_default(), identity.get_untracked());

    // The conversation on the relay (a site that keeps transcripts): its id, made when it is
    // first needed; who answers it; the latest message by a person shown; whether the visitor's
    // last message seemed to ask for a person; the stream of its events while a person is
    // asked for or answering (and the panel open), with the id it follows.
    let conversation = RwSignal::new(None::<String>);
    let holder = RwSignal::new(Holder::Bot);
    let seq = StoredValue::new(0usize);
    let suggest_person = RwSignal::new(false);
    let asking_person = RwSignal::new(false);
    let person_error = RwSignal::new(None::<String>);
    let live = StoredValue::new_local(None::<(String, AbortController)>);
    let kept = move || config.with(|c| c.as_ref().and_then(|c| c.conversations.clone()));
    let handoff = move || kept().is_some_and(|c| c.handoff);
    // What the hand-off bar says: who answers, and what went wrong asking for a person.
    let holder_line = move || {
        let mut line = match holder.get() {
            Holder::Bot => String::new(),
            Holder::Waiting => t(text::WAITING_FOR_PERSON),
            Holder::Person => t(text::CHATTING_WITH_PERSON),
        };
        if let Some(error) = person_error.get() {
            line.push(' ');
            line.push_str(&error);
        }
        line
    };

    // The relay, the site key and the visitor token, as one request's caller needs them.
    let caller_parts = move || {
        let (relay, key) = embed.with_value(|e| (e.relay.clone(), e.site_key.clone()));
        (relay, key, controls.visitor_token.get_untracked())
    };
    let save_conversation = move || {
        let state = conversation.get_untracked().map(|id| storage::Conversation {
            id,
            holder: holder.get_untracked(),
            seq: seq.get_value() as i64,
        });
        let (key, who) = slot();
        storage::save_conversation(&key, &who, state.as_ref());
    };
    // Forgets the conversation on the relay: the next message starts a new one.
    let new_conversation = move || {
        conversation.set(None);
        holder.set(Holder::Bot);
        seq.set_value(0);
        suggest_person.set(false);
        person_error.set(None);
        save_conversation();
    };

    // Resolves once the site's config is known (or could not be): a chat request waits for it,
    // since whether it names a conversation depends on it.
    let mut loaded = None;
    let config_ready = js_sys::Promise::new(&mut |resolve, _| loaded = Some(resolve));
    let config_ready = StoredValue::new_local(config_ready);
    spawn_local(async move {
        let (relay, key) = embed.with_value(|e| (e.relay.clone(), e.site_key.clone()));
        let answer = api::widget_config(&relay, &key).await;
        if !controls.live() {
            return;
        }
        match answer {
            Ok(site) => {
                let keeps = site.conversations.is_some();
                config.set(Some(site));
                if !keeps && conversation.get_untracked().is_some() {
                    // The site no longer keeps conversations.
                    new_conversation();
                }
            }
            Err(e) => error.set(Some(e)),
        }
        if let Some(resolve) = loaded {
            let _ = resolve.call0(&wasm_bindgen::JsValue::UNDEFINED);
        }
    });
    // The conversation's id, made (and kept) if the site keeps conversations and it has none.
    let conversation_id = move || -> Option<String> {
        kept()?;
        if let Some(id) = conversation.get_untracked() {
            return Some(id);
        }
        let id = conversation::new_id()?;
        conversation.set(Some(id.clone()));
        holder.set(Holder::Bot);
        seq.set_value(0);
        save_conversation();
        Some(id)
    };

    let title = move || {
        embed
            .with_value(|e| e.title.clone())
            .or_else(|| config.with(|c| c.as_ref().map(|c| c.title.clone())))
            .unwrap_or_else(|| t(text::DEFAULT_TITLE))
    };
    let greeting = move || {
        embed
            .with_value(|e| e.greeting.clone())
            .or_else(|| config.with(|c| c.as_ref().map(|c| c.greeting.clone())))
            .unwrap_or_default()
    };

    // Messages outlive whatever view created them (a suggestion button disappears as soon as
    // it is clicked), so their signals belong to the chat itself.
    let owner = StoredValue::new_local(Owner::current());
    let push = move |entry: Entry| {
        let id = next_id.get_value();
        next_id.set_value(id + 1);
        let signals = || {
            (
                RwSignal::new(entry.content),
                RwSignal::new(entry.request),
                RwSignal::new(entry.rating),
                RwSignal::new(entry.sources),
            )
        };
        let (text, request, rating, sources) = owner.with_value(|owner| match owner {
            Some(owner) => owner.with(signals),
            None => signals(),
        });
        let person = entry.person;
        let message = Message { id, role: entry.role, text, request, rating, person, sources };
        messages.update(|list| list.push(message));
        message
    };
    let entries = move || -> Vec<Entry> {
        messages.with_untracked(|list| list.iter().map(Message::entry).collect())
    };
    let history = move || -> Vec<ChatMessage> { entries().iter().map(Entry::message).collect() };
    let remember = move || {
        let (key, who) = slot();
        storage::save(&key, &who, &entries());
    };
    // The conversation so far of this visitor on this site (this page or another one of it).
    let restore = move || {
        let (key, who) = slot();
        let (stored, kept) = (storage::load(&key, &who), storage::conversation(&key, &who));
        for entry in stored {
            push(entry);
        }
        holder.set(kept.as_ref().map_or(Holder::Bot, |c| c.holder));
        seq.set_value(kept.as_ref().map_or(0, |c| c.seq as usize));
        conversation.set(kept.map(|c| c.id));
        suggest_person.set(false);
        person_error.set(None);
    };
    restore();

    // The events of the conversation while a person is asked for or answers, with the panel
    // open or closed: a person's messages join the chat (and, while the panel is closed, count
    // on the launcher until it opens), and the holder follows the relay's.
    let unread = RwSignal::new(0u32);
    let stop_live = move || {
        if let Some((_, abort)) = live.try_get_value().flatten() {
            abort.abort();
            live.set_value(None);
        }
    };
    let start_live = move |id: String| {
        let Ok(abort) = AbortController::new() else { return };
        let signal = abort.signal();
        live.set_value(Some((id.clone(), abort)));
        let (relay, key, visitor) = caller_parts();
        let generation = controls.generation.get_value();
        spawn_local(async move {
            let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
            let after = Cell::new(seq.get_value() as i64);
            let mut on_event = |event: Live| {
                if controls.generation.get_value() != generation {
                    return false;
                }
                match event {
                    Live::Holder(now) => holder.set(now),
                    Live::Message(message) => {
                        seq.set_value(message.seq as usize);
                        if message.author == "operator" {
                            if !open.get_untracked() {
                                unread.update(|n| *n = n.saturating_add(1));
                            }
                            announce.set(message.content.clone());
                            push(Entry {
                                person: true,
                                ..Entry::new(Role::Assistant, message.content)
                            });
                            remember();
                        }
                    }
                }
                save_conversation();
                holder.get_untracked() != Holder::Bot
            };
            let result =
                api::follow_conversation(caller, &id, &after, &signal, &mut on_event).await;
            if signal.aborted() || controls.generation.get_value() != generation {
                return;
            }
            // Ended by itself (back to the bot, or refused): nothing follows it any more.
            live.try_set_value(None);
            if let Err(e) = result {
                person_error.set(Some(said(&e)));
            }
        });
    };
    Effect::new(move |_| {
        let (id, holder) = (conversation.get(), holder.get());
        let wanted = id.filter(|_| holder != Holder::Bot);
        let following = live.get_value().map(|(id, _)| id);
        if wanted != following {
            stop_live();
            if let Some(id) = wanted {
                start_live(id);
            }
        }
    });
    on_cleanup(stop_live);

    // Another identity, or a reset: nothing of the conversation shown may stay on screen or be
    // sent again (`switch_to` has aborted the request in flight).
    Effect::new(move |previous: Option<()>| {
        controls.switched.track();
        if previous.is_some() {
            stop_live();
            messages.set(Vec::new());
            error.set(None);
            announce.set(String::new());
            draft.set(String::new());
            busy.set(false);
            controller.set_value(None);
            restore();
        }
    });

    // Sends what the visitor says to the person holding the conversation.
    let tell_person = move |text: String| {
        let Some(id) = conversation.get_untracked() else { return };
        let (relay, key, visitor) = caller_parts();
        let generation = controls.generation.get_value();
        spawn_local(async move {
            let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
            let result = api::tell_person(caller, &id, &text).await;
            if controls.generation.get_value() == generation
                && let Err(e) = result
            {
                error.set(Some(e));
            }
        });
    };

    // Streams an answer into `answer`, for as long as its stream can be followed.
    let stream_answer = move |answer: Message, ask: Ask| {
        busy.set(true);
        stick_to_bottom.set_value(true);
        let Ok(abort) = AbortController::new() else { return };
        let signal = abort.signal();
        let (relay, key, visitor) = caller_parts();
        let stream = Rc::new(RefCell::new(None));
        let caller = (relay.clone(), key.clone(), visitor.clone());
        controller.set_value(Some(Flight { abort, caller, stream: Rc::clone(&stream) }));
        let generation = controls.generation.get_value();
        let asker = identity.get_untracked();
        let slot_key = storage_key.get_value();
        let ready = config_ready.get_value();
        spawn_local(async move {
            let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
            let on_text = |delta: api::Delta<'_>| match delta {
                api::Delta::Text(piece) => {
                    answer.text.update(|t| t.push_str(piece));
                    controls.emit("message.delta", piece);
                }
                api::Delta::Sources(sources) => answer.sources.set(sources),
            };
            let request = Rc::new(RefCell::new(None::<String>));
            let mut question = None;
            let result = match ask {
                Ask::Question(conversation) => {
                    let _ = JsFuture::from(ready).await;
                    let id = if controls.generation.get_value() == generation {
                        conversation_id()
                    } else {
                        None
                    };
                    question = conversation.last().map(|m| m.content.clone());
                    // Named, the answer can be followed again after a reload; in a kept
                    // conversation, its request id is what feedback on it names.
                    // (The relay sends a request id with every answer: outside a kept
                    // conversation it is not kept, and the answer cannot be rated.)
                    let named = id.as_deref();
                    let head = |name: Option<&str>, id: Option<&str>| {
                        let id = named.and(id);
                        *request.borrow_mut() = id.map(str::to_owned);
                        if let Some(name) = name {
                            *stream.borrow_mut() = Some(name.to_owned());
                            storage::save_stream(&slot_key, &asker, Some((name, id)));
                        }
                    };
                    api::stream_chat(caller, conversation, named, &signal, head, on_text).await
                }
                Ask::Resume(id, asked) => {
                    *stream.borrow_mut() = Some(id.clone());
                    *request.borrow_mut() = asked;
                    api::resume_chat(caller, &id, &signal, on_text).await
                }
            };
            storage::save_stream(&slot_key, &asker, None);
            if controls.generation.get_value() != generation {
                // The conversation it belonged to is gone (and so is its message).
                return;
            }
            busy.set(false);
            controller.set_value(None);
            let complete = match result {
                Ok(()) => {
                    answer.request.set(request.take());
                    let text = answer.text.get_untracked();
                    announce.set(text.clone());
                    Some(text)
                }
                Err(ChatError::WithPerson) => {
                    // A person holds the conversation: the question goes to them instead.
                    messages.update(|list| list.retain(|m| m.id != answer.id));
                    if holder.get_untracked() == Holder::Bot {
                        holder.set(Holder::Waiting);
                        save_conversation();
                    }
                    if let Some(question) = question {
                        tell_person(question);
                    }
                    None
                }
                Err(e) => {
                    if answer.text.with_untracked(String::is_empty) {
                        messages.update(|list| list.retain(|m| m.id != answer.id));
                    }
                    error.set(Some(e));
                    None
                }
            };
            remember();
            // Last: the page's listener may destroy the chat, or switch its visitor.
            if let Some(text) = complete {
                controls.emit("message", &text);
            }
        });
    };
    // An answer that was streaming when the page was left is followed again from its start,
    // if the conversation shown still waits for it.
    let (key, who) = slot();
    let waiting = storage::stream(&key, &who);
    if let Some((stream, request)) = waiting {
        if messages.with_untracked(|list| list.last().is_some_and(|m| m.role == Role::User)) {
            let answer = push(Entry::new(Role::Assistant, String::new()));
            stream_answer(answer, Ask::Resume(stream, request));
        } else {
            storage::save_stream(&key, &who, None);
        }
    }

    let send = move |text: String| {
        let text = text.trim().to_owned();
        if text.is_empty() || busy.get_untracked() {
            return;
        }
        let limit = config.with_untracked(|c| c.as_ref().map(|c| c.max_message_bytes as usize));
        if let Some(limit) = limit.filter(|&limit| text.len() > limit) {
            error.set(Some(ChatError::TooLong { limit }));
            return;
        }
        error.set(None);
        draft.set(String::new());
        if holder.get_untracked() != Holder::Bot && conversation.get_untracked().is_some() {
            // A person is asked for or answers: the model does not see this.
            push(Entry::new(Role::User, text.clone()));
            remember();
            stick_to_bottom.set_value(true);
            tell_person(text);
            return;
        }
        if strings.with_value(|s| conversation::wants_person(&text, s)) {
            suggest_person.set(true);
        }
        let mut conversation = history();
        conversation.push(ChatMessage::new(Role::User, text.clone()));
        push(Entry::new(Role::User, text));
        let answer = push(Entry::new(Role::Assistant, String::new()));
        remember();
        stream_answer(answer, Ask::Question(conversation));
    };

    // "Talk to a person".
    let ask_person = move |_| {
        if asking_person.get_untracked() {
            // Already asked: the relay's answer is on its way.
            return;
        }
        let Some(id) = conversation_id() else { return };
        asking_person.set(true);
        person_error.set(None);
        let (relay, key, visitor) = caller_parts();
        let generation = controls.generation.get_value();
        spawn_local(async move {
            let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
            let result = api::hand_off(caller, &id).await;
            if controls.generation.get_value() != generation {
                return;
            }
            asking_person.set(false);
            match result {
                Ok(now) => {
                    suggest_person.set(false);
                    holder.set(now);
                    save_conversation();
                }
                Err(e) => person_error.set(Some(said(&e))),
            }
        });
    };

    // A verdict on `message` (with a comment, after a thumbs-down), told to the relay.
    // `said` (the row's quiet line) gets what the relay answered, in words: thanks, or its error.
    let rate =
        move |message: Message, rating: Rating, comment: Option<String>, line: web_sys::Element| {
            let (Some(id), Some(request)) =
                (conversation.get_untracked(), message.request.get_untracked())
            else {
                return;
            };
            let before = message.rating.get_untracked();
            message.rating.set(Some(rating));
            line.set_text_content(None);
            let (relay, key, visitor) = caller_parts();
            let generation = controls.generation.get_value();
            spawn_local(async move {
                let caller = api::Caller { relay: &relay, key: &key, visitor: visitor.as_deref() };
                let result = api::feedback(caller, &id, &request, rating, comment.as_deref()).await;
                if controls.generation.get_value() != generation {
                    return;
                }
                match result {
                    Ok(()) => {
                        line.set_text_content(Some(&t(text::THANKS)));
                        remember();
                    }
                    Err(e) => {
                        message.rating.try_set(before);
                        line.set_text_content(Some(&said(&e)));
                    }
                }
            });
        };

    // `Confab.send(text)` from the page.
    Effect::new(move |_| {
        if let Some(text) = controls.outbox.get() {
            controls.outbox.set(None);
            send(text);
        }
    });
    // `open` and `close` events for the page. The first render counts as opening when the
    // visitor or the page's script asked for the panel before the module was loaded (but not
    // for `data-open`, which is how the page was made).
    let opened_by_request = embed.with_value(|e| e.open && e.focus);
    Effect::new(move |previous: Option<bool>| {
        let now = open.get();
        if previous.map_or(opened_by_request, |was| was != now) {
            controls.emit(if now { "open" } else { "close" }, "");
        }
        now
    });
    // Opening moves the focus into the input, once the panel is visible (a hidden element
    // cannot take it).
    Effect::new(move |_| {
        if !open.get() {
            return;
        }
        unread.set(0);
        if quiet_open.get_value() {
            quiet_open.set_value(false);
            return;
        }
        request_animation_frame(move || {
            if let Some(input) = input_ref.try_get_untracked().flatten() {
                let _ = input.focus();
            }
        });
    });
    // Autoscroll as messages come and the answer grows, after the DOM has caught up (answers
    // render on animation frames: `rendered` tells when).
    let rendered = Trigger::new();
    Effect::new(move |_| {
        messages.track();
        rendered.track();
        error.track();
        request_animation_frame(move || {
            if let Some(list) = list_ref.try_get_untracked().flatten()
                && stick_to_bottom.try_get_value() == Some(true)
            {
                list.set_scroll_top(list.scroll_height());
            }
        });
    });
    // The theme: the host's `--confab-primary` wins, then `data-color`, then the site's colour.
    Effect::new(move |_| {
        let color = embed
            .with_value(|e| e.color.clone())
            .or_else(|| config.with(|c| c.as_ref().and_then(|c| c.theme.primary_color.clone())));
        let Some(root) = root_ref.get() else { return };
        if let Some(rgb) = color.as_deref().and_then(parse_hex) {
            let style = web_sys::HtmlElement::style(&root);
            let _ = style.set_property(
                "--primary",
                &["var(--confab-primary, ", color.as_deref().unwrap_or_default(), ")"].concat(),
            );
            let _ = style.set_property(
                "--on-primary",
                &["var(--confab-on-primary, ", on_color(rgb), ")"].concat(),
            );
        }
    });

    // `error` events for the page: why an answer did not come (not the visitor's own stop).
    Effect::new(move |_| {
        let said =
            error.with(|e| e.as_ref().filter(|e| !matches!(e, ChatError::Aborted)).map(said));
        if let Some(said) = said {
            controls.emit("error", &said);
        }
    });

    let inline = embed.with_value(|e| e.inline);
    let close = move || {
        if inline {
            return;
        }
        open.set(false);
        if let Some(launcher) = launcher_ref.get_untracked() {
            let _ = launcher.focus();
        }
    };
    let stop = move |_| controls.abort();
    let retry = move |_| {
        // Resend the last question: drop it (and any partial answer) and send it again.
        let last_user = messages.with_untracked(|list| {
            list.iter()
                .rposition(|m| m.role == Role::User)
                .map(|i| (i, list[i].text.get_untracked()))
        });
        if let Some((index, text)) = last_user {
            messages.update(|list| list.truncate(index));
            send(text);
        }
    };
    let clear = move |_| {
        stop(());
        stop_live();
        messages.set(Vec::new());
        error.set(None);
        announce.set(String::new());
        remember();
        // A new conversation, on the relay too.
        new_conversation();
        if let Some(input) = input_ref.get_untracked() {
            let _ = input.focus();
        }
    };

    view! {
        <div
            class="confab"
            node_ref=root_ref
            class:open=move || open.get()
            class:left=embed.with_value(|e| e.left)
            class:inline=inline
            dir=embed.with_value(|e| e.dir.clone())
            lang=embed.with_value(|e| e.lang.clone())
        >
            // Always in the DOM, so that closing can animate too (and a draft survives closing);
            // while closed it is `visibility: hidden`: not focusable, not in the a11y tree.
            <section
                    class="panel"
                    part="panel"
                    role=if inline { "region" } else { "dialog" }
                    aria-label=title
                    on:keydown=move |ev| {
                        if ev.key() == "Escape" {
                            ev.prevent_default();
                            close();
                        }
                    }
                >
                    <header part="header">
                        <h2 part="title">{title}</h2>
                        <button class="clear" part="clear" type="button" on:click=clear>{t(text::CLEAR)}</button>
                        {(!inline).then(|| view! {
                            <button
                                class="close"
                                part="close"
                                type="button"
                                aria-label=t(text::CLOSE_CHAT)
                                on:click=move |_| close()
                            >
                                "×"
                            </button>
                        })}
                    </header>
                    <p class="notice" class:hidden=move || kept().is_none() dir="auto">
                        {move || kept().map(|kept| kept.notice).unwrap_or_default()}
                    </p>
                    <ol
                        class="messages"
                        part="messages"
                        node_ref=list_ref
                        on:scroll=move |_| {
                            if let Some(list) = list_ref.get_untracked() {
                                let below = list.scroll_height() - list.scroll_top() - list.client_height();
                                stick_to_bottom.set_value(below < 32);
                            }
                        }
                    >
                        <li class="assistant greeting" part="message assistant" dir="auto">{greeting}</li>
                        <For each=move || messages.get() key=|m| m.id let:message>
                            {match message.role {
                                Role::User => view! { <li class="user" part="message user" dir="auto">{move || message.text.get()}</li> }.into_any(),
                                // A person's message is shown like an answer (through the same safe
                                // renderer), under their label.
                                _ => view! {
                                    <li class="assistant" part="message assistant" class:person=message.person dir="auto">
                                        {message.person.then(|| view! { <span class="from">{t(text::FROM_PERSON)}</span> })}
                                        <Answer message rendered rate strings/>
                                    </li>
                                }.into_any(),
                            }}
                        </For>
                    </ol>
                    <Show when=move || messages.with(Vec::is_empty)>
                        <div class="suggestions" part="suggestions">
                            {move || {
                                config
                                    .with(|c| c.as_ref().map(|c| c.suggestions.clone()))
                                    .unwrap_or_default()
                                    .into_iter()
                                    .map(|q| {
                                        let text = q.clone();
                                        view! {
                                            <button type="button" on:click=move |_| send(text.clone())>
                                                {q}
                                            </button>
                                        }
                                    })
                                    .collect_view()
                            }}
                        </div>
                    </Show>
                    <Show when=move || error.with(Option::is_some)>
                        <p class="error" part="error" role="alert">
                            {move || error.with(|e| e.as_ref().map(said))}
                            <button class="retry" type="button" on:click=retry>{t(text::RETRY)}</button>
                        </p>
                    </Show>
                    <div class="handoff" class:hidden=move || !handoff()>
                        <p class="holder" role="status">{holder_line}</p>
                        <button
                            class="ask-person"
                            class:hidden=move || holder.get() != Holder::Bot
                            class:suggested=move || suggest_person.get()
                            type="button"
                            on:click=ask_person
                        >
                            {t(text::TALK_TO_PERSON)}
                        </button>
                    </div>
                    <form part="form" on:submit=move |ev| {
                        ev.prevent_default();
                        send(draft.get_untracked());
                    }>
                        <textarea
                            aria-label=t(text::YOUR_MESSAGE)
                            part="input"
                            dir="auto"
                            placeholder=t(text::PLACEHOLDER)
                            rows="1"
                            node_ref=input_ref
                            prop:value=move || draft.get()
                            on:input=move |ev| draft.set(event_target_value(&ev))
                            on:keydown=move |ev| {
                                if ev.key() == "Enter" && !ev.shift_key() && !ev.is_composing() {
                                    ev.prevent_default();
                                    send(draft.get_untracked());
                                }
                            }
                        ></textarea>
                        <Show
                            when=move || busy.get()
                            fallback=move || view! { <button class="send" part="send" type="submit">{t(text::SEND)}</button> }
                        >
                            <button class="stop" part="send stop" type="button" on:click=move |_| stop(())>{t(text::STOP)}</button>
                        </Show>
                    </form>
                </section>
            <div class="sr-only" role="status" aria-live="polite">{move || announce.get()}</div>
            {(!inline).then(|| view! {
                <button
                    class="launcher"
                part="launcher"
                    type="button"
                    node_ref=launcher_ref
                    aria-label=move || match (open.get(), unread.get()) {
                        (true, _) => t(text::CLOSE_CHAT),
                        (false, 0) => t(text::OPEN_CHAT),
                        (false, n) => strings.try_with_value(|s| s.open_chat_unread(n)).unwrap_or_default(),
                    }
                    aria-expanded=move || if open.get() { "true" } else { "false" }
                    on:click=move |_| open.update(|o| *o = !*o)
                >
                    // Attributes as expressions, not literals: an element whose every attribute and
                    // child is a literal is "inert", and Leptos builds inert elements by parsing
                    // their HTML (`innerHTML` on a template), which a page enforcing Trusted Types
                    // refuses.
                    <svg viewBox="0 0 24 24" aria-hidden="true" fill={"currentColor"}>
                        <path d={"M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z"}></path>
                    </svg>
                    <Show when=move || unread.get() != 0 && !open.get()>
                        <span class="unread" aria-hidden="true">{move || text::decimal(u64::from(unread.get().min(99)))}</span>
                    </Show>
                </button>
            })}
        </div>
    }
}

/// An answer (or a person's message), rendered from its markdown as its text grows: at most
/// once per animation frame however fast tokens arrive, and only what changed
/// (`markdown::Rendered`). `rendered` is notified after each render. Under it, the feedback row
/// (see `feedback`), filled once the answer is complete in a conversation the relay keeps (and
/// empty, hidden by CSS, otherwise); `rate` tells the relay the visitor's verdict and says what
/// it answered on the row's quiet line.
#[component]
fn Answer<F>(
    message: Message,
    rendered: Trigger,
    rate: F,
    strings: StoredValue<Strings, LocalStorage>,
) -> impl IntoView
where
    F: Fn(Message, Rating, Option<String>, web_sys::Element) + Copy + Send + Sync + 'static,
{
    let text = message.text;
    let node = NodeRef::<leptos::html::Div>::new();
    let row = NodeRef::<leptos::html::Div>::new();
    let shown = StoredValue::new_local(markdown::Rendered::default());
    let pending = StoredValue::new(false);
    let sources_node = NodeRef::<leptos::html::Div>::new();
    // The sources arrive once, after the text: drawn when they change (or the node appears).
    Effect::new(move |_| {
        if let Some(holder) = sources_node.get() {
            message.sources.with(|sources| {
                strings.with_value(|strings| {
                    let _ = sources::show(&holder, sources, strings);
                });
            });
        }
    });
    Effect::new(move |_| {
        text.track();
        node.track();
        message.request.track();
        message.rating.track();
        if pending.get_value() {
            return;
        }
        pending.set_value(true);
        // The answer may be gone by the next frame (cleared, or another visitor's): the `try_`
        // accesses then find nothing to do.
        request_animation_frame(move || {
            pending.try_set_value(false);
            let Some(element) = node.try_get_untracked().flatten() else { return };
            text.try_with_untracked(|text| {
                shown.try_update_value(|shown| shown.update(&element, text))
            });
            if let Some(row) = row.try_get_untracked().flatten() {
                let complete = message.request.try_get_untracked().flatten().is_some();
                if complete && row.child_element_count() == 0 {
                    strings.try_with_value(|strings| feedback::build(&row, strings));
                }
                feedback::show_rating(&row, message.rating.try_get_untracked().flatten());
            }
            rendered.notify();
        });
    });
    let rated = move |rating: Rating, comment: Option<String>| {
        if let Some(row) = row.get_untracked()
            && let Some(line) = feedback::line(&row)
        {
            feedback::show_comment(&row, comment.is_none() && rating == Rating::Down);
            rate(message, rating, comment, line);
        }
    };
    view! {
        <div class="md" node_ref=node></div>
        <div class="sources" node_ref=sources_node></div>
        <div
            class="feedback"
            node_ref=row
            on:click=move |ev| {
                if let Some(rating) = feedback::thumb_of(ev.target())
                    && message.rating.get_untracked() != Some(rating)
                {
                    rated(rating, None);
                }
            }
            on:submit=move |ev| {
                ev.prevent_default();
                let comment = feedback::comment_of(ev.target());
                if !comment.trim().is_empty() {
                    rated(Rating::Down, Some(comment));
                }
            }
        ></div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;

    // Natively under `cargo test`, and in headless Chromium under wasm-bindgen-test.
    #[wasm_bindgen_test(unsupported = test)]
    fn hex_colours_parse_in_both_lengths() {
        assert_eq!(parse_hex("#1f5fbf"), Some([0x1f, 0x5f, 0xbf]));
        assert_eq!(parse_hex("#fff"), Some([255, 255, 255]));
        for bad in ["1f5fbf", "#12345", "#ggg", "red", "#1f5fbfaa", ""] {
            assert_eq!(parse_hex(bad), None, "{bad}");
        }
    }

    #[wasm_bindgen_test(unsupported = test)]
    fn text_on_the_primary_colour_keeps_aa_contrast() {
        assert_eq!(on_color([0x1f, 0x5f, 0xbf]), "#fff"); // the default blue: 6.1:1
        assert_eq!(on_color([0, 0, 0]), "#fff");
        assert_eq!(on_color([0xff, 0xd7, 0x00]), "#111"); // gold: white would be 1.4:1
        assert_eq!(on_color([255, 255, 255]), "#111");
    }
}
