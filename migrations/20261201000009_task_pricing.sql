-- How a task is priced (the model's flat price and price rows at submit, and its reference
-- count), and what it was charged: each delivered image at its own price, at most its hold.
-- Tasks from before have neither: they were priced flat (price_micros per delivered image).
ALTER TABLE tasks ADD COLUMN tariff TEXT;
ALTER TABLE tasks ADD COLUMN charged_micros BIGINT;
