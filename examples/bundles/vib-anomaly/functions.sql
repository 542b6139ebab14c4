// The anomaly score of one 256-sample vibration window: a logit, > 0 means anomalous.
create function vib_score(Vector of Real w) -> Real
  as predict('vib_anomaly', rfft(w))[1];

// The score of every window of the vibration signal, as it arrives.
create function vib_anomaly_level() -> Stream of Real
  as select stream of vib_score(w) from Vector of Real w
     where w in winagg(signal_stream('vibration'), 256, 256);
