//! What the LLM is told, in one place: a conversation's prompt is built here
//! and nowhere else.
//!
//! The messages, in order:
//! 1. **Persona** (system): the persona's `system_prompt`, then its `context`.
//!    The same for every conversation of the persona, so its KV cache is
//!    prefilled once and reused ([`ConversationContext::persona_messages`]).
//! 2. **Conversation** (system, only when there is any): the conversation's
//!    `conversational_context` as `conversation.overwrite_llm_context` last
//!    replaced it, then every `conversation.append_llm_context` since, then
//!    what perception currently notices of the user ("The user looks
//!    confused."), newest last, at most [`MAX_PERCEPTION_NOTES`].
//! 3. **Turns**: user and assistant messages, oldest first. A replica turn
//!    cut short by barge-in holds only what was actually spoken, marked as
//!    interrupted.
//!
//! When the turns no longer fit the token budget, the oldest are dropped
//! (never the newest user turn) and the conversation message says how many
//! were left out, so the conversation goes on however long it runs.

use std::collections::VecDeque;

use super::openai::Message;

/// Perception notes kept in the prompt: the latest ones.
pub const MAX_PERCEPTION_NOTES: usize = 4;
/// Appended to a replica turn cut short by the user.
pub const INTERRUPTED_MARK: &str = " —";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Turn {
    User(String),
    Assistant(String),
}

/// One conversation's prompt state.
#[derive(Debug, Clone, Default)]
pub struct ConversationContext {
    system_prompt: String,
    persona_context: String,
    conversational: String,
    appended: Vec<String>,
    perception: VecDeque<String>,
    turns: VecDeque<Turn>,
    dropped: usize,
}

impl ConversationContext {
    /// A conversation of a persona (`system_prompt`, `context`) with the
    /// conversation's own `conversational_context`.
    pub fn new(system_prompt: &str, persona_context: &str, conversational_context: &str) -> Self {
        Self {
            system_prompt: system_prompt.trim().to_string(),
            persona_context: persona_context.trim().to_string(),
            conversational: conversational_context.trim().to_string(),
            ..Self::default()
        }
    }

    /// `conversation.overwrite_llm_context`: the conversation's context
    /// becomes `context`; earlier appends go with the old one.
    pub fn overwrite(&mut self, context: &str) {
        self.conversational = context.trim().to_string();
        self.appended.clear();
    }

    /// `conversation.append_llm_context`.
    pub fn append(&mut self, context: &str) {
        let context = context.trim();
        if !context.is_empty() {
            self.appended.push(context.to_string());
        }
    }

    /// A note from perception; the oldest beyond [`MAX_PERCEPTION_NOTES`] go.
    pub fn perceive(&mut self, note: &str) {
        let note = note.trim();
        if note.is_empty() {
            return;
        }
        if self.perception.len() == MAX_PERCEPTION_NOTES {
            self.perception.pop_front();
        }
        self.perception.push_back(note.to_string());
    }

    pub fn user(&mut self, text: &str) {
        self.turns.push_back(Turn::User(text.trim().to_string()));
    }

    /// The replica's turn as it was spoken: all of it, or (interrupted) only
    /// the part the user heard. Nothing spoken leaves no turn.
    pub fn assistant(&mut self, spoken: &str, interrupted: bool) {
        let spoken = spoken.trim();
        if spoken.is_empty() {
            return;
        }
        let text = if interrupted { format!("{spoken}{INTERRUPTED_MARK}") } else { spoken.to_string() };
        self.turns.push_back(Turn::Assistant(text));
    }

    /// Turns left out so far to stay within the budget.
    pub fn dropped_turns(&self) -> usize {
        self.dropped
    }

    /// The persona message alone: the prompt prefix shared by every
    /// conversation of the persona.
    pub fn persona_messages(&self) -> Vec<Message> {
        let persona = [self.system_prompt.as_str(), self.persona_context.as_str()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        vec![Message::new("system", persona)]
    }

    fn conversation_message(&self) -> Option<Message> {
        let mut parts = Vec::new();
        let context: Vec<&str> = std::iter::once(self.conversational.as_str())
            .chain(self.appended.iter().map(String::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        if !context.is_empty() {
            parts.push(format!("Context for this conversation:\n{}", context.join("\n")));
        }
        if !self.perception.is_empty() {
            let notes: Vec<String> = self.perception.iter().map(|n| format!("- {n}")).collect();
            parts.push(format!("What you notice about the user right now:\n{}", notes.join("\n")));
        }
        if self.dropped > 0 {
            parts.push(format!("({} earlier turns of this conversation are left out.)", self.dropped));
        }
        (!parts.is_empty()).then(|| Message::new("system", parts.join("\n\n")))
    }

    /// The whole prompt: persona, conversation, turns.
    pub fn messages(&self) -> Vec<Message> {
        let mut messages = self.persona_messages();
        messages.extend(self.conversation_message());
        messages.extend(self.turns.iter().map(|t| match t {
            Turn::User(text) => Message::new("user", text.as_str()),
            Turn::Assistant(text) => Message::new("assistant", text.as_str()),
        }));
        messages
    }

    /// Drops the oldest turns until `count(messages)` is within `budget`
    /// tokens, keeping at least the newest turn; returns how many went.
    /// `count` is the caller's tokenizer over the rendered prompt.
    pub fn fit(&mut self, budget: usize, count: impl Fn(&[Message]) -> usize) -> usize {
        let mut dropped_now = 0;
        while self.turns.len() > 1 && count(&self.messages()) > budget {
            self.turns.pop_front();
            // A reply without its question reads oddly: drop them in pairs.
            if matches!(self.turns.front(), Some(Turn::Assistant(_))) && self.turns.len() > 1 {
                self.turns.pop_front();
                self.dropped += 1;
                dropped_now += 1;
            }
            self.dropped += 1;
            dropped_now += 1;
        }
        dropped_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(messages: &[Message]) -> Vec<&str> {
        messages.iter().map(|m| m.role.as_str()).collect()
    }

    fn words(messages: &[Message]) -> usize {
        messages.iter().map(|m| m.content.as_deref().unwrap_or("").split_whitespace().count()).sum()
    }

    #[test]
    fn prompt_layout_is_persona_conversation_turns() {
        let mut c = ConversationContext::new("You are Ada.", "Ada sells bikes.", "The user is Sam.");
        assert_eq!(roles(&c.messages()), ["system", "system"]);
        assert_eq!(c.persona_messages()[0].content.as_deref(), Some("You are Ada.\n\nAda sells bikes."));
        c.append("Sam likes red.");
        c.perceive("The user is smiling.");
        c.user("Hi!");
        c.assistant("Hello Sam, how can I help", true);
        let m = c.messages();
        assert_eq!(roles(&m), ["system", "system", "user", "assistant"]);
        let conversation = m[1].content.as_deref().unwrap();
        assert!(conversation.contains("The user is Sam.\nSam likes red."), "{conversation}");
        assert!(conversation.contains("- The user is smiling."));
        assert_eq!(m[3].content.as_deref(), Some("Hello Sam, how can I help —"));
        // The persona prefix is the start of every prompt.
        assert_eq!(m[0], c.persona_messages()[0]);
    }

    #[test]
    fn overwrite_replaces_context_and_appends() {
        let mut c = ConversationContext::new("P", "", "old");
        c.append("more");
        c.overwrite("new");
        let m = c.messages();
        let text = m[1].content.as_deref().unwrap();
        assert!(text.contains("new") && !text.contains("old") && !text.contains("more"), "{text}");
        c.overwrite("");
        assert_eq!(roles(&c.messages()), ["system"], "no empty conversation message");
    }

    #[test]
    fn perception_keeps_the_latest_notes() {
        let mut c = ConversationContext::new("P", "", "");
        for i in 0..7 {
            c.perceive(&format!("note {i}"));
        }
        let text = c.messages()[1].content.clone().unwrap();
        assert!(!text.contains("note 2") && text.contains("note 3") && text.contains("note 6"), "{text}");
    }

    #[test]
    fn fitting_drops_oldest_turns_in_pairs_and_says_so() {
        let mut c = ConversationContext::new("Persona prompt here.", "", "");
        for i in 0..10 {
            c.user(&format!("question number {i} with some words"));
            c.assistant(&format!("answer number {i} with a few more words"), false);
        }
        c.user("the last question");
        let before = words(&c.messages());
        let dropped = c.fit(before / 2, words);
        assert!(dropped >= 2 && dropped.is_multiple_of(2), "{dropped}");
        let m = c.messages();
        assert!(words(&m) <= before / 2);
        assert_eq!(m.last().unwrap().content.as_deref(), Some("the last question"));
        assert_eq!(m[2].role, "user", "turns start with a user turn");
        assert!(m[1].content.as_deref().unwrap().contains(&format!("{dropped} earlier turns")));
        // However small the budget, the newest turn stays.
        c.fit(1, words);
        assert_eq!(roles(&c.messages()).last(), Some(&"user"));
        assert_eq!(c.messages().iter().filter(|m| m.role == "user").count(), 1);
    }
}
