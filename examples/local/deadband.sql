// Data reduction: send a reading only when it moved more than 0.25 since the last one sent.
// A slowly swinging temperature (600 readings) shrinks to a fraction of its readings;
// `changed` then drops repeats of a rounded reading.
create function temperature() -> Stream of Real
  as select stream of -20 + 5 * sin(i / 60.0) from Integer i where i in siota(1, 600);

// readings before and after (a finite stream is counted as a vector: vectorof, then dim)
select dim(vectorof(temperature())), dim(vectorof(deadband(temperature(), 0.25)));
select stream of x from Real x where x in deadband(temperature(), 0.25) limit 5;
select stream of x from Real x where x in changed(round(temperature())) limit 3;
