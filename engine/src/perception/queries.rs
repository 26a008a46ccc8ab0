//! The persona's questions about the user (`visual_awareness_queries`,
//! asked of the live state; `perception_analysis_queries`, answered after
//! the call), matched to what perception measures: presence, how many
//! people, the seven expressions, and whether the user looks at the screen.
//! A question about anything else is answered as such, never guessed.

use super::expression::Expression;
use super::signals::{Summary, UserState};

/// What a question asks about, and whether "yes" means the measured thing
/// holds (`true`) or does not (`false`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Topic {
    Expression(Expression, bool),
    /// Looking at the screen.
    Attention(bool),
    Present(bool),
    /// More than one person in view.
    Company(bool),
}

/// A live answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    /// Perception measures this, but cannot tell right now (no face in view).
    Unknown,
    /// Perception does not measure this.
    Unanswerable,
}

/// What perception can read, for answers to questions it cannot.
pub const MEASURES: &str = "presence, the number of people in view, facial expression (neutral, happy, sad, \
                            angry, fearful, disgusted, surprised) and whether the user looks at the screen";

fn has(q: &str, words: &[&str]) -> bool {
    words.iter().any(|w| q.contains(w))
}

fn topic(question: &str) -> Option<Topic> {
    let q = question.to_lowercase();
    let negated = has(&q, &[" not ", "n't ", " no longer "]);
    let yes = |holds: bool| holds != negated;
    let expressions: [(&[&str], Expression); 7] = [
        (&["smil", "happy", "laugh", "cheerful", "joy"], Expression::Happy),
        (&["sad", "unhappy", "upset", "crying", "down"], Expression::Sad),
        (&["angry", "anger", "annoyed", "frustrat", "mad ", "irritat"], Expression::Angry),
        (&["surpris", "shock", "astonish"], Expression::Surprised),
        (&["afraid", "fear", "scared", "nervous", "anxious", "worried"], Expression::Fearful),
        (&["disgust"], Expression::Disgusted),
        (&["neutral", "calm", "expressionless", "blank"], Expression::Neutral),
    ];
    if has(&q, &["look away", "looking away", "looks away", "looked away", "distract"]) {
        return Some(Topic::Attention(!yes(true)));
    }
    if has(&q, &["attention", "attentive", "focus", "looking at the", "look at the", "engaged", "eye contact"]) {
        return Some(Topic::Attention(yes(true)));
    }
    if has(&q, &["how many", "someone else", "another person", "other people", "more than one", "second person"])
        || has(&q, &["people", "anyone else"])
    {
        return Some(Topic::Company(yes(true)));
    }
    if has(&q, &["alone"]) {
        return Some(Topic::Company(!yes(true)));
    }
    for (words, e) in expressions {
        if has(&q, words) {
            return Some(Topic::Expression(e, yes(true)));
        }
    }
    if has(&q, &["present", "in view", "on camera", "visible", "in front of", "in the frame", "there?", "here?"]) {
        return Some(Topic::Present(yes(true)));
    }
    None
}

/// The answer the live state gives to `question`.
pub fn live(question: &str, state: &UserState) -> Answer {
    let Some(topic) = topic(question) else { return Answer::Unanswerable };
    let holds = match topic {
        Topic::Present(_) => Some(state.present),
        _ if !state.present => None,
        // No expression has held long enough to read yet.
        Topic::Expression(e, _) => state.expression.map(|(now, _)| now == e),
        Topic::Attention(_) => Some(state.away_since.is_none()),
        Topic::Company(_) => Some(state.people > 1),
    };
    let wanted = match topic {
        Topic::Expression(_, y) | Topic::Attention(y) | Topic::Present(y) | Topic::Company(y) => y,
    };
    match holds {
        None => Answer::Unknown,
        Some(h) if h == wanted => Answer::Yes,
        Some(_) => Answer::No,
    }
}

/// The answer to `question` from what the whole call showed.
pub fn after_call(question: &str, summary: &Summary) -> String {
    let Some(topic) = topic(question) else {
        return format!("Perception cannot answer this: it reads {MEASURES}.");
    };
    if summary.seconds_in_view <= 0.0 {
        return "The user was never seen on camera, so this cannot be answered.".into();
    }
    let percent = |share: f64| format!("{:.0} %", 100.0 * share);
    match topic {
        Topic::Expression(e, _) => {
            let share = summary.expressions.iter().find(|(x, _)| *x == e).map_or(0.0, |(_, s)| *s);
            format!("The user looked {} for {} of the time their expression was read.", e.label(), percent(share))
        }
        Topic::Attention(_) => {
            format!(
                "The user looked at the screen for {} of the time they were in view.",
                percent(summary.attention_share)
            )
        }
        Topic::Present(_) => format!("The user was in view for {:.0} s.", summary.seconds_in_view),
        Topic::Company(_) if summary.most_people > 1 => {
            format!("Up to {} people were in the frame at once.", summary.most_people)
        }
        Topic::Company(_) => "Only the user was in the frame.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(present: bool, people: usize, expression: Option<Expression>, away: bool) -> UserState {
        UserState { present, people, expression: expression.map(|e| (e, 0.9)), away_since: away.then_some(1.0) }
    }

    #[test]
    fn live_questions_follow_the_state() {
        let smiling = state(true, 1, Some(Expression::Happy), false);
        assert_eq!(live("Is the user smiling?", &smiling), Answer::Yes);
        assert_eq!(live("Is the user not smiling?", &smiling), Answer::No);
        assert_eq!(live("Does the user look sad?", &smiling), Answer::No);
        assert_eq!(live("Is the user looking away?", &smiling), Answer::No);
        assert_eq!(live("Is the user paying attention?", &smiling), Answer::Yes);
        assert_eq!(live("Is there someone else in the room?", &smiling), Answer::No);
        assert_eq!(live("Is the user alone?", &smiling), Answer::Yes);
        let away = state(true, 2, None, true);
        assert_eq!(live("Is the user looking away?", &away), Answer::Yes);
        assert_eq!(live("Is the user distracted?", &away), Answer::Yes);
        assert_eq!(live("Is the user paying attention?", &away), Answer::No);
        assert_eq!(live("Is there someone else in the room?", &away), Answer::Yes);
        let gone = state(false, 0, None, false);
        assert_eq!(live("Is the user smiling?", &gone), Answer::Unknown);
        assert_eq!(live("Is the user on camera?", &gone), Answer::No);
        assert_eq!(live("Is the user wearing glasses?", &smiling), Answer::Unanswerable);
    }

    #[test]
    fn after_the_call_answers_come_from_the_summary() {
        let summary = Summary {
            seconds_in_view: 120.0,
            attention_share: 0.64,
            expressions: vec![(Expression::Happy, 0.4), (Expression::Neutral, 0.6)],
            most_people: 2,
        };
        assert_eq!(
            after_call("Did the user smile?", &summary),
            "The user looked happy for 40 % of the time their expression was read."
        );
        assert!(after_call("Was the user attentive?", &summary).contains("64 %"));
        assert!(after_call("Was anyone else there?", &summary).contains("Up to 2 people"));
        assert!(after_call("What colour was the user's shirt?", &summary).starts_with("Perception cannot answer"));
        let never = Summary { seconds_in_view: 0.0, attention_share: 0.0, expressions: vec![], most_people: 0 };
        assert!(after_call("Did the user smile?", &never).contains("never seen"));
    }
}
