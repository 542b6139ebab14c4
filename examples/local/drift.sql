// On-device monitoring without a model: z-scores against the recent past, and data drift
// against a reference distribution, over a simulated signal with a spike every 997 readings
// whose level shifts half way.
create function sensor() -> Stream of Real
  as select stream of sin(i / 7.0) + case when i > 2000 then 1.5 else 0 end
                                   + case when i % 997 = 0 then 6 else 0 end
     from Integer i where i in siota(1, 4000);

// how far each reading lies from the 50 before it, in standard deviations: the outliers
select stream of z from Real z where z in zscore(sensor(), 50) and abs(z) > 4 limit 5;

// per 500 readings, how many standard errors the mean moved from the reference (mean 0, sd 0.7)
select stream of d from Real d where d in drift(sensor(), 0.0, 0.7, 500);
