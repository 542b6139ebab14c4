validate 'a quiet machine is normal'
  check vib_score(0.2 * sin(range(1, 256) * 0.5)) < 0 => true
  check vib_score(zeros(256)) < 0 => true;
validate 'a worn bearing is anomalous'
  check vib_score(sin(range(1, 256) * 0.5) + 4 * sin(range(1, 256) * 2.2)) > 0 => true;
