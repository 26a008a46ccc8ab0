//! The dialogue in virtual time.
use super::*;
use crate::asr::Transcription;
use crate::turn::EndReason;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn end_of_turn(text: &str) -> HearingEvent {
    HearingEvent::EndOfTurn {
        at: 0,
        reason: EndReason::Silence { silence_ms: 500 },
        transcript: Transcription { text: text.into(), language: "en".into(), duration: 1.0, segments: vec![] },
    }
}

fn partial(text: &str, at_pause: bool) -> HearingEvent {
    HearingEvent::Partial(Partial {
        seq: 1,
        committed_text: text.into(),
        tentative_text: String::new(),
        avg_logprob: -0.2,
        no_speech_prob: 0.0,
        at_pause,
    })
}

fn pause_partial(text: &str) -> HearingEvent {
    partial(text, true)
}

fn actions(d: &mut Dialogue) -> Vec<Action> {
    std::iter::from_fn(|| d.poll_action()).collect()
}

fn event_types(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .filter_map(|a| if let Action::Event { event_type, .. } = a { Some(*event_type) } else { None })
        .collect()
}

fn dialogue(config: DialogueConfig) -> Dialogue {
    Dialogue::new(config, ConversationContext::new("You are Ada.", "", ""))
}

#[test]
fn a_turn_is_heard_answered_spoken_and_kept() {
    let mut d = dialogue(DialogueConfig::default());
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    assert_eq!(d.state(), State::UserSpeaking);
    d.heard(ms(900), HearingEvent::SpeechStopped { at: 0 });
    d.heard(ms(1200), end_of_turn("What is your name?"));
    let a = actions(&mut d);
    let Some(Action::Reply { turn, messages }) = a.iter().find(|a| matches!(a, Action::Reply { .. })) else {
        panic!("no reply in {a:?}")
    };
    assert_eq!(messages.last().and_then(|m| m.content.as_deref()), Some("What is your name?"));
    assert!(a.contains(&Action::Utterance { role: "user", text: "What is your name?".into() }));
    assert_eq!(d.state(), State::Thinking);
    let turn = *turn;
    d.phrase(ms(1300), turn, "I am Ada.".into());
    d.phrase(ms(1350), turn, "Nice to meet you.".into());
    d.composed(ms(1400), turn, ReplyEnd::Done);
    let a = actions(&mut d);
    assert!(a.contains(&Action::Speak { turn, seq: 0, text: "I am Ada.".into() }));
    assert!(a.contains(&Action::Speak { turn, seq: 1, text: "Nice to meet you.".into() }));
    d.playing(ms(1500), turn, 0);
    let a = actions(&mut d);
    assert!(a.contains(&Action::ReplicaSpeaking(true)));
    assert_eq!(event_types(&a), ["conversation.replica.started_speaking"]);
    assert_eq!(d.state(), State::ReplicaSpeaking);
    d.played_out(ms(2500), turn, 0);
    assert_eq!(d.state(), State::ReplicaSpeaking, "one phrase is still to play");
    d.playing(ms(2500), turn, 1);
    d.played_out(ms(3500), turn, 1);
    let a = actions(&mut d);
    assert_eq!(d.state(), State::Listening);
    assert!(a.contains(&Action::ReplicaSpeaking(false)));
    assert!(a.contains(&Action::Utterance { role: "replica", text: "I am Ada. Nice to meet you.".into() }));
    let types = event_types(&a);
    assert!(types.contains(&"conversation.replica.stopped_speaking"), "{types:?}");
    let prompt = d.context().messages();
    let roles: Vec<&str> = prompt.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"]);
    assert_eq!(prompt[2].content.as_deref(), Some("I am Ada. Nice to meet you."));
}

#[test]
fn barge_in_keeps_only_what_was_heard() {
    let mut d = dialogue(DialogueConfig::default());
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(1000), end_of_turn("Tell me a story."));
    let turn = 1;
    d.phrase(ms(1100), turn, "Once upon a time,".into());
    d.phrase(ms(1150), turn, "there was a fox.".into());
    d.playing(ms(1200), turn, 0);
    actions(&mut d);
    d.heard(ms(1500), HearingEvent::SpeechStarted { at: 0 });
    assert_eq!(d.state(), State::ReplicaSpeaking, "speech over the replica waits for barge-in");
    d.heard(ms(1900), HearingEvent::BargeIn { at: 0, decision: BargeInDecision::Interrupt });
    let a = actions(&mut d);
    assert!(a.contains(&Action::Cancel { turn }));
    assert!(a.contains(&Action::ReplicaSpeaking(false)));
    assert!(event_types(&a).contains(&"conversation.replica_interrupted"));
    let last = a.iter().rev().find_map(|a| match a {
        Action::Event { event_type: "conversation.utterance.streaming", properties } => Some(properties.clone()),
        _ => None,
    });
    assert_eq!(last.unwrap()["is_interrupted"], true);
    assert_eq!(d.state(), State::UserSpeaking);
    let prompt = d.context().messages();
    assert_eq!(
        prompt.last().unwrap().content,
        Some(format!("Once upon a time,{}", crate::llm::context::INTERRUPTED_MARK))
    );
    // Late results of the cancelled reply change nothing.
    d.phrase(ms(2000), turn, "The end.".into());
    assert!(actions(&mut d).is_empty());
}

#[test]
fn speculation_is_kept_when_the_final_agrees_and_redone_when_not() {
    let mut d = dialogue(DialogueConfig { speculative: true, ..Default::default() });
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(800), HearingEvent::SpeechStopped { at: 0 });
    d.heard(ms(810), pause_partial("What time is it?"));
    let a = actions(&mut d);
    assert!(matches!(a.last(), Some(Action::Reply { turn: 1, .. })), "{a:?}");
    d.phrase(ms(900), 1, "It is noon.".into());
    assert!(actions(&mut d).iter().all(|a| !matches!(a, Action::Speak { .. })), "held until confirmed");
    d.heard(ms(1000), end_of_turn("what time is it"));
    let a = actions(&mut d);
    assert!(a.contains(&Action::Speak { turn: 1, seq: 0, text: "It is noon.".into() }));
    assert!(!a.iter().any(|a| matches!(a, Action::Reply { .. } | Action::Cancel { .. })));

    let mut d = dialogue(DialogueConfig { speculative: true, ..Default::default() });
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(800), HearingEvent::SpeechStopped { at: 0 });
    d.heard(ms(810), pause_partial("What time"));
    d.phrase(ms(900), 1, "Noon.".into());
    d.heard(ms(1000), end_of_turn("What time does the shop open?"));
    let a = actions(&mut d);
    assert!(a.contains(&Action::Cancel { turn: 1 }));
    let Some(Action::Reply { messages, .. }) = a.iter().find(|a| matches!(a, Action::Reply { turn: 2, .. })) else {
        panic!("{a:?}")
    };
    assert_eq!(messages.last().unwrap().content.as_deref(), Some("What time does the shop open?"));
    assert!(!a.iter().any(|a| matches!(a, Action::Speak { .. })));
}

#[test]
fn speculation_starts_on_the_pause_decode_even_before_the_vad_calls_the_pause() {
    let mut d = dialogue(DialogueConfig { speculative: true, ..Default::default() });
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    // A streaming partial mid-speech is not a reason to reply.
    d.heard(ms(500), partial("What time", false));
    assert!(!actions(&mut d).iter().any(|a| matches!(a, Action::Reply { .. })));
    // The hearing decodes the pause after 96 ms of quiet, 64 ms before the VAD's stop.
    d.heard(ms(900), pause_partial("What time is it?"));
    let a = actions(&mut d);
    assert!(matches!(a.last(), Some(Action::Reply { turn: 1, .. })), "{a:?}");
    d.heard(ms(960), HearingEvent::SpeechStopped { at: 0 });
    d.phrase(ms(1000), 1, "It is noon.".into());
    d.heard(ms(1100), end_of_turn("What time is it?"));
    let a = actions(&mut d);
    assert!(a.contains(&Action::Speak { turn: 1, seq: 0, text: "It is noon.".into() }), "{a:?}");
    assert!(!a.iter().any(|a| matches!(a, Action::Reply { .. } | Action::Cancel { .. })));
}

#[test]
fn a_reply_cut_off_before_it_is_heard_leaves_the_words_unanswered() {
    let mut d = dialogue(DialogueConfig::default());
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(1000), end_of_turn("I want to book"));
    d.heard(ms(1100), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(2000), end_of_turn("a table for two."));
    let a = actions(&mut d);
    assert!(a.contains(&Action::Cancel { turn: 1 }));
    let Some(Action::Reply { turn: 2, messages }) = a.iter().find(|a| matches!(a, Action::Reply { turn: 2, .. }))
    else {
        panic!("{a:?}")
    };
    assert_eq!(messages.last().unwrap().content.as_deref(), Some("I want to book a table for two."));
}

#[test]
fn echo_mode_speaks_what_it_is_sent_and_nothing_else() {
    let mut d = dialogue(DialogueConfig { echo_only: true, ..Default::default() });
    d.heard(ms(0), HearingEvent::SpeechStarted { at: 0 });
    d.heard(ms(1000), end_of_turn("hello there"));
    let a = actions(&mut d);
    assert!(!a.iter().any(|a| matches!(a, Action::Reply { .. })), "{a:?}");
    d.interaction(ms(1100), Interaction::EchoText("Welcome.".into()));
    let a = actions(&mut d);
    assert!(a.iter().any(|a| matches!(a, Action::Speak { text, .. } if text == "Welcome.")));
    d.interaction(ms(1200), Interaction::Respond("hi".into()));
    assert!(matches!(actions(&mut d).as_slice(), [Action::Refused(_)]));
    d.interaction(ms(1300), Interaction::EchoAudio { pcm: vec![0; 1600], sample_rate: 16_000 });
    let a = actions(&mut d);
    assert!(a.iter().any(|a| matches!(a, Action::Play { sample_rate: 16_000, pcm, .. } if pcm.len() == 1600)));
}

#[test]
fn greeting_tool_calls_failures_and_sensitivity() {
    let mut d = dialogue(DialogueConfig { greeting: Some("Hi, I'm Ada.".into()), ..Default::default() });
    d.joined(ms(0));
    assert!(actions(&mut d).contains(&Action::Speak { turn: 1, seq: 0, text: "Hi, I'm Ada.".into() }));

    d.noticed("The user looks confused.");
    d.interaction(ms(10), Interaction::Respond("Weather in Oslo?".into()));
    let a = actions(&mut d);
    assert!(a.contains(&Action::Cancel { turn: 1 }));
    let said = a.iter().find_map(|a| match a {
        Action::Event { event_type: "conversation.utterance", properties } => Some(properties.clone()),
        _ => None,
    });
    assert_eq!(said.unwrap()["user_visual_analysis"], "The user looks confused.");
    let call = Call { name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() };
    d.composed(ms(20), 2, ReplyEnd::Call(call));
    let a = actions(&mut d);
    let Some(Action::Event { properties, .. }) =
        a.iter().find(|a| matches!(a, Action::Event { event_type: "conversation.tool_call", .. }))
    else {
        panic!("{a:?}")
    };
    assert_eq!(
        (properties["name"].as_str(), properties["arguments"].as_str()),
        (Some("get_weather"), Some(r#"{"city":"Oslo"}"#))
    );
    assert_eq!(d.state(), State::Listening);
    let roles: Vec<String> = d.context().messages().iter().map(|m| m.role.clone()).collect();
    // Persona, the perception note, then the question and the call it led to.
    assert_eq!(roles, ["system", "system", "user", "assistant"]);

    d.interaction(ms(30), Interaction::Respond("And now?".into()));
    actions(&mut d);
    d.composed(ms(40), 3, ReplyEnd::Failed { error: "boom".into(), fallback: "Sorry.".into() });
    let a = actions(&mut d);
    assert!(a.contains(&Action::Speak { turn: 3, seq: 0, text: "Sorry.".into() }));
    assert!(event_types(&a).contains(&"conversation.error"));

    d.interaction(ms(50), Interaction::Sensitivity(json!({"participant_pause_sensitivity": "high"})));
    assert_eq!(actions(&mut d), [Action::Sensitivity { patience: Some(Patience::Low), interruptibility: None }]);
    for bad in [
        json!({}),
        json!({"participant_pause_sensitivity": "extreme"}),
        json!({"participant_interrupt_sensitivity": 3}),
    ] {
        d.interaction(ms(60), Interaction::Sensitivity(bad.clone()));
        assert!(matches!(actions(&mut d).as_slice(), [Action::Refused(_)]), "{bad}");
    }
}
