//! Live signals: per-frame observations of the user (faces in view, the
//! expression, where the head points) smoothed over time into a small
//! state, and short notes for the LLM only when that state changes.
//!
//! Sans-IO and driven by the observation times: the same frames give the
//! same notes, and tests run in virtual time.

use super::expression::Expression;

/// What one analysed camera frame showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Seconds on the session's clock.
    pub t: f64,
    /// Faces the detector found (others' faces included).
    pub faces: usize,
    /// `faces` is only a lower bound: a quick look, without the tiles that
    /// find small faces (people further back). A quick look can raise the
    /// count or show the user is there, never lower it or show them gone.
    pub quick: bool,
    /// The main face's expression probabilities, in [`Expression::ALL`] order.
    pub expression: Option<[f32; 7]>,
    /// The main face's head turn: yaw (left/right) and pitch (up/down), in
    /// degrees, 0 facing the camera.
    pub head: Option<(f32, f32)>,
}

/// Thresholds and time constants of the tracker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignalConfig {
    /// Seconds without a face before the user counts as absent.
    pub absent_after: f64,
    /// Seconds a new face count must hold before it counts.
    pub count_holds: f64,
    /// Time constant of the expression smoothing, seconds.
    pub expression_tau: f64,
    /// Smoothed probability an expression needs to be noted.
    pub expression_confidence: f32,
    /// Seconds a new dominant expression must hold before it is noted.
    pub expression_holds: f64,
    /// Head turn beyond which the user looks away, degrees.
    pub away_degrees: f32,
    /// Seconds of looking away before it is noted.
    pub away_after: f64,
}

impl Default for SignalConfig {
    fn default() -> Self {
        Self {
            absent_after: 2.0,
            count_holds: 1.0,
            expression_tau: 0.8,
            expression_confidence: 0.6,
            expression_holds: 1.0,
            away_degrees: 25.0,
            away_after: 3.0,
        }
    }
}

/// The smoothed state.
#[derive(Debug, Clone, PartialEq)]
pub struct UserState {
    pub present: bool,
    pub people: usize,
    /// The noted dominant expression and its smoothed probability.
    pub expression: Option<(Expression, f32)>,
    /// Since when the user has looked away (None while looking at the screen).
    pub away_since: Option<f64>,
}

/// A change worth telling the LLM, with when it was noticed.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub t: f64,
    pub text: String,
}

/// Turns observations into state and notes for one session.
#[derive(Debug, Clone)]
pub struct SignalTracker {
    config: SignalConfig,
    state: UserState,
    last_t: Option<f64>,
    last_face: Option<f64>,
    /// A face count seen, and since when, until it holds.
    count_candidate: Option<(usize, f64)>,
    smoothed: [f32; 7],
    expression_candidate: Option<(Expression, f64)>,
    /// Whether "looked away" was noted for the current look away.
    away_noted: bool,
    /// Time spent looking at the screen and present, for the summary.
    attentive: f64,
    observed: f64,
    expression_time: [f64; 7],
    most_people: usize,
}

fn pronoun(n: usize) -> &'static str {
    match n {
        2 => "a second person",
        3 => "a third person",
        _ => "more people",
    }
}

impl SignalTracker {
    pub fn new(config: SignalConfig) -> Self {
        Self {
            config,
            state: UserState { present: false, people: 0, expression: None, away_since: None },
            last_t: None,
            last_face: None,
            count_candidate: None,
            smoothed: [0.0; 7],
            expression_candidate: None,
            away_noted: false,
            attentive: 0.0,
            observed: 0.0,
            expression_time: [0.0; 7],
            most_people: 0,
        }
    }

    pub fn state(&self) -> &UserState {
        &self.state
    }

    /// Takes one observation (in time order; an earlier one is ignored)
    /// and returns the notes it brings.
    pub fn observe(&mut self, o: &Observation) -> Vec<Note> {
        let mut notes = Vec::new();
        let dt = match self.last_t {
            Some(last) if o.t < last => return notes,
            Some(last) => o.t - last,
            None => 0.0,
        };
        self.last_t = Some(o.t);
        let c = self.config;
        let mut note = |text: String| notes.push(Note { t: o.t, text });

        // Presence and head count, each held before it counts.
        if o.faces > 0 {
            self.last_face = Some(o.t);
        }
        let recent = self.last_face.is_some_and(|seen| o.t - seen < c.absent_after);
        let present = recent || (o.quick && self.state.present);
        if present != self.state.present {
            self.state.present = present;
            note(if present { "the user is in view".into() } else { "the user has left the camera's view".into() });
            if !present {
                self.state.people = 0;
                self.state.expression = None;
                self.state.away_since = None;
                self.away_noted = false;
            }
        }
        let at_most_known = self.state.people.max(self.count_candidate.map_or(0, |(n, _)| n));
        if o.quick && o.faces < at_most_known {
            // Fewer faces than known may be small ones a quick look misses.
        } else if present && o.faces > 0 && o.faces != self.state.people {
            match self.count_candidate {
                Some((n, since)) if n == o.faces && o.t - since >= c.count_holds => {
                    let before = self.state.people;
                    self.state.people = n;
                    self.count_candidate = None;
                    if n > before && before >= 1 {
                        note(format!("{} joined the frame", pronoun(n)));
                    } else if n < before && n == 1 {
                        note("the user is alone in the frame again".into());
                    }
                }
                Some((n, _)) if n == o.faces => {}
                _ => self.count_candidate = Some((o.faces, o.t)),
            }
            if self.state.people == 0 {
                self.state.people = o.faces;
                self.count_candidate = None;
                if o.faces > 1 {
                    note(format!("{} people are in the frame", o.faces));
                }
            }
        } else if o.faces == self.state.people {
            self.count_candidate = None;
        }
        self.most_people = self.most_people.max(self.state.people);

        // Expression: exponential smoothing on the observation clock.
        if let Some(p) = o.expression {
            let a = if self.observed == 0.0 && self.smoothed == [0.0; 7] {
                1.0
            } else {
                (1.0 - (-dt / c.expression_tau).exp()) as f32
            };
            for (s, x) in self.smoothed.iter_mut().zip(p) {
                *s += (x - *s) * a;
            }
            let top = Expression::most_likely(&self.smoothed);
            let confidence = self.smoothed[top as usize];
            let current = self.state.expression.map(|(e, _)| e);
            if confidence >= c.expression_confidence && current != Some(top) {
                match self.expression_candidate {
                    Some((e, since)) if e == top && o.t - since >= c.expression_holds => {
                        self.state.expression = Some((top, confidence));
                        self.expression_candidate = None;
                        note(format!("the user looks {}", top.label()));
                    }
                    Some((e, _)) if e == top => {}
                    _ => self.expression_candidate = Some((top, o.t)),
                }
            } else if current == Some(top) {
                self.state.expression = Some((top, confidence));
                self.expression_candidate = None;
            }
            self.expression_time[top as usize] += dt;
        }

        // Attention: looking away for a while, and back.
        if let Some((yaw, pitch)) = o.head {
            let away = yaw.abs() > c.away_degrees || pitch.abs() > c.away_degrees;
            match (away, self.state.away_since) {
                (true, None) => self.state.away_since = Some(o.t),
                (true, Some(since)) if !self.away_noted && o.t - since >= c.away_after => {
                    self.away_noted = true;
                    note(format!("the user has looked away for {:.0} seconds", o.t - since));
                }
                (false, Some(_)) => {
                    if self.away_noted {
                        note("the user is looking at the screen again".into());
                    }
                    self.state.away_since = None;
                    self.away_noted = false;
                }
                _ => {}
            }
            if !away {
                self.attentive += dt;
            }
        }
        // Time in view is time a face was seen (not the grace before absence).
        if o.faces > 0 {
            self.observed += dt;
        }
        notes
    }

    /// What the call showed, for the end-of-call analysis.
    pub fn summary(&self) -> Summary {
        let total: f64 = self.expression_time.iter().sum();
        let mut expressions: Vec<(Expression, f64)> = Expression::ALL
            .iter()
            .map(|&e| (e, if total > 0.0 { self.expression_time[e as usize] / total } else { 0.0 }))
            .filter(|(_, share)| *share > 0.0)
            .collect();
        expressions.sort_by(|a, b| b.1.total_cmp(&a.1));
        Summary {
            seconds_in_view: self.observed,
            attention_share: if self.observed > 0.0 { (self.attentive / self.observed).min(1.0) } else { 0.0 },
            expressions,
            most_people: self.most_people,
        }
    }
}

/// The end-of-call view of the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub seconds_in_view: f64,
    /// Share of the time in view spent looking at the screen.
    pub attention_share: f64,
    /// Expressions by share of the time they led, largest first.
    pub expressions: Vec<(Expression, f64)>,
    /// Most people in the frame at once.
    pub most_people: usize,
}

impl Summary {
    /// One paragraph for the analysis webhook and event.
    pub fn describe(&self) -> String {
        if self.seconds_in_view <= 0.0 {
            return "The user was never seen on camera.".into();
        }
        let moods: Vec<String> =
            self.expressions.iter().take(3).map(|(e, share)| format!("{} {:.0} %", e.label(), 100.0 * share)).collect();
        let people = if self.most_people > 1 {
            format!(" Up to {} people were in the frame.", self.most_people)
        } else {
            String::new()
        };
        format!(
            "The user was in view for {:.0} s and looked at the screen {:.0} % of that time. Expressions: {}.{people}",
            self.seconds_in_view,
            100.0 * self.attention_share,
            if moods.is_empty() { "none read".into() } else { moods.join(", ") },
        )
    }
}

/// Head yaw and pitch in degrees from FaceMesh landmarks (image pixels):
/// yaw from where the nose tip sits between the cheeks, pitch from where it
/// sits between the eyes' line and the chin, each 0 for a frontal face.
pub fn head_angles(points: &[[f32; 2]]) -> Option<(f32, f32)> {
    const NOSE: usize = 1;
    const CHEEKS: (usize, usize) = (234, 454);
    const EYES: (usize, usize) = (33, 263);
    const CHIN: usize = 152;
    if points.len() < 468 {
        return None;
    }
    let d = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let nose = points[NOSE];
    let (left, right) = (d(nose, points[CHEEKS.0]), d(nose, points[CHEEKS.1]));
    let yaw = ((right - left) / (left + right).max(1e-3)).clamp(-1.0, 1.0).asin().to_degrees();
    let eyes = [(points[EYES.0][0] + points[EYES.1][0]) / 2.0, (points[EYES.0][1] + points[EYES.1][1]) / 2.0];
    let (up, down) = (d(nose, eyes), d(nose, points[CHIN]));
    // A frontal face has the nose tip about 40 % of the way from eyes to chin.
    let share = up / (up + down).max(1e-3);
    let pitch = ((share - 0.4) / 0.4).clamp(-1.0, 1.0).asin().to_degrees();
    Some((yaw, pitch))
}
